import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

export { freePort } from '../bench/lib/proc.js';

/** The machine's NATS (JetStream on), which tests that need no server of their own use. */
export const NATS_URL = 'nats://127.0.0.1:4222';

/** Why the machine's NATS cannot be used, or undefined when it answers with JetStream on. */
export async function natsUnreachable(): Promise<string | undefined> {
  try {
    const nc = await connect({ servers: [NATS_URL], timeout: 2000 });
    try {
      await (await jetstreamManager(nc)).getAccountInfo();
    } finally {
      await nc.close();
    }
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The machine's nats-server binary (Debian's package). */
export const NATS_SERVER = '/usr/sbin/nats-server';

/** Why a private nats-server cannot be run here, or undefined. */
export function natsServerMissing(): string | undefined {
  return existsSync(NATS_SERVER) ? undefined : `${NATS_SERVER} not found`;
}

async function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A nats-server with JetStream of a test's own (port and store folder), so the test may stop
 * and restart it without disturbing other tests using the machine's NATS.
 */
export class PrivateNats {
  private proc: ChildProcess | undefined;
  private out = '';

  constructor(
    readonly port: number,
    readonly storeDir: string,
  ) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const proc = spawn(
      NATS_SERVER,
      ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.storeDir],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    proc.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.proc = proc;
    const deadline = Date.now() + 15_000;
    while (!(await accepts(this.port))) {
      if (proc.exitCode !== null) throw new Error(`nats-server exited:\n${this.out}`);
      if (Date.now() > deadline) throw new Error(`nats-server did not start:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops the server (SIGTERM: it shuts down cleanly) and waits for it to exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await gone;
    this.proc = undefined;
  }

  output(): string {
    return this.out;
  }
}
