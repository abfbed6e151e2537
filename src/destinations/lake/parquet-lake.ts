import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { TributaryError } from '../../errors.js';
import { containsAny, inList, type RowTarget } from '../../platform/duckdb/duckdb-erase.js';
import { sqlString } from '../../platform/duckdb/duckdb-sql.js';
import type { StoredEvent } from '../../store/store.js';
import type { LoadOptions, LoadResult, OffsetScope, WarehouseDestination } from '../destination.js';
import { loadIsolated } from '../isolate.js';
import { duckdbRefusesData } from '../warehouse/duckdb/duckdb-engine.js';
import { TABLE_OF_TYPE } from '../warehouse/layout/segment-layout.js';
import { sanitizeName } from '../warehouse/naming.js';

/** One committed load, `_manifest/<nextOffset>.json`. */
export interface LakeManifestEntry {
  version: 1;
  destination: string;
  /** Log offsets `[fromOffset, nextOffset)` are in the files below. */
  fromOffset: number;
  nextOffset: number;
  rows: number;
  /** Paths relative to the lake's root. */
  files: string[];
  committedAt: string;
  /** Workspace and event log of the offsets (absent in lakes of older versions). */
  workspace?: string;
  logId?: string;
}

/** Columns of every file; JSON columns are Parquet strings with the JSON annotation. */
const SELECT_COLUMNS = `
  id, j->>'$.type' AS type, j->>'$.event' AS event_text, j->>'$.userId' AS user_id,
  j->>'$.anonymousId' AS anonymous_id, j->>'$.groupId' AS group_id, j->>'$.previousId' AS previous_id,
  j->>'$.name' AS name,
  TRY_CAST(j->>'$.timestamp' AS TIMESTAMPTZ) AS "timestamp",
  TRY_CAST(j->>'$.sentAt' AS TIMESTAMPTZ) AS sent_at,
  TRY_CAST(j->>'$.originalTimestamp' AS TIMESTAMPTZ) AS original_timestamp,
  TRY_CAST(j->>'$.receivedAt' AS TIMESTAMPTZ) AS received_at,
  now() AS loaded_at, log_offset,
  j->'$.properties' AS properties, j->'$.traits' AS traits, j->'$.context' AS context,
  source, event, date`;

export interface ParquetLakeOptions {
  name: string;
  /** A DuckDB instance to run COPY on (the process's own). */
  instance: DuckDBInstance;
  /** Folder of the lake. */
  root: string;
  /**
   * Workspace and event log whose offsets the manifests count: a lake whose manifests name
   * another refuses to start (`TRIB_ERR_DEST_FOREIGN_LAKE`): its files are named by offset,
   * so this log's would skip events or replace them. Manifests without one (older versions)
   * are taken as this log's.
   */
  scope?: OffsetScope;
}

/**
 * A Parquet lake: `source=<id>/event=<table>/date=<YYYY-MM-DD>/part-<offset>-<n>.parquet`
 * (hive partitions, written by DuckDB's `COPY … PARTITION_BY`), `event` being the Segment
 * table of the event (`order_completed`, `identifies`, `pages`, …) and `date` the UTC day of
 * `received_at`.
 *
 * Exactly once: a load writes its files to `_staging/<nextOffset>/`, syncs them, then commits
 * by writing `_manifest/<nextOffset>.json` (written to a temporary name, synced, renamed),
 * and only then moves the files into their partitions. After a crash, a staging folder with
 * a manifest is moved into place (roll forward), one without is deleted (roll back); the
 * stored offset is the newest manifest's. Readers list the files through the manifests, or
 * glob `source=*\/event=*\/date=*\/*.parquet`, which only ever holds committed files.
 */
export class ParquetLake implements WarehouseDestination {
  readonly name: string;
  private conn: DuckDBConnection | undefined;
  private offset = 0;
  private recovered = false;

  constructor(private readonly options: ParquetLakeOptions) {
    this.name = options.name;
  }

  private get manifestDir(): string {
    return join(this.options.root, '_manifest');
  }

  private get stagingDir(): string {
    return join(this.options.root, '_staging');
  }

  /** Recovers from an interrupted load, then returns the newest manifest's offset. */
  async storedOffset(): Promise<number> {
    mkdirSync(this.manifestDir, { recursive: true });
    mkdirSync(this.stagingDir, { recursive: true });
    const all = this.manifests();
    const scope = this.options.scope;
    const foreign = scope
      ? all.filter(
          (m) => m.logId !== undefined && (m.logId !== scope.logId || m.workspace !== scope.workspace),
        )
      : [];
    if (scope && foreign.length > 0) {
      const m = foreign[foreign.length - 1]!;
      throw new TributaryError('TRIB_ERR_DEST_FOREIGN_LAKE', [
        this.name,
        `log ${m.logId} of workspace "${m.workspace}"`,
        `log ${scope.logId} of workspace "${scope.workspace}"`,
      ]);
    }
    const committed = new Map(all.map((m) => [String(m.nextOffset), m]));
    for (const dir of readdirSync(this.stagingDir)) {
      const entry = committed.get(dir);
      if (entry) this.moveIntoPlace(join(this.stagingDir, dir), entry);
      else rmSync(join(this.stagingDir, dir), { recursive: true, force: true });
    }
    this.offset = Math.max(0, ...[...committed.values()].map((m) => m.nextOffset));
    this.recovered = true;
    return this.offset;
  }

  /** The committed loads, oldest first. */
  manifests(): LakeManifestEntry[] {
    if (!existsSync(this.manifestDir)) return [];
    return readdirSync(this.manifestDir)
      .filter((f) => /^\d+\.json$/.test(f))
      .map((f) => JSON.parse(readFileSync(join(this.manifestDir, f), 'utf8')) as LakeManifestEntry)
      .sort((a, b) => a.nextOffset - b.nextOffset);
  }

  /**
   * Writes the load's files and commits them; an event DuckDB cannot write (JSON it cannot
   * parse) is found by writing halves of the load to a probe folder (`_staging/probe-…`,
   * deleted after, and at start-up like any staging folder without a manifest) and left out.
   */
  async load(events: readonly StoredEvent[], nextOffset: number, options?: LoadOptions): Promise<LoadResult> {
    if (!this.recovered) await this.storedOffset();
    return loadIsolated(this.name, events, nextOffset, options, {
      attempt: async (part, commit) => {
        if (commit) return this.commit(part, nextOffset);
        const probe = join(this.stagingDir, `probe-${nextOffset}`);
        try {
          await this.writeFiles(part, probe, nextOffset);
        } finally {
          rmSync(probe, { recursive: true, force: true });
        }
      },
      refusesData: duckdbRefusesData,
    });
  }

  private async commit(events: readonly StoredEvent[], nextOffset: number): Promise<void> {
    const stage = join(this.stagingDir, String(nextOffset));
    const files = await this.writeFiles(events, stage, nextOffset);
    const entry: LakeManifestEntry = {
      version: 1,
      destination: this.name,
      fromOffset: this.offset,
      nextOffset,
      rows: events.length,
      files,
      committedAt: new Date().toISOString(),
      workspace: this.options.scope?.workspace,
      logId: this.options.scope?.logId,
    };
    const manifest = join(this.manifestDir, `${String(nextOffset).padStart(20, '0')}.json`);
    writeFileSync(`${manifest}.tmp`, JSON.stringify(entry));
    syncFile(`${manifest}.tmp`);
    renameSync(`${manifest}.tmp`, manifest); // the commit point
    syncFile(this.manifestDir);
    this.offset = nextOffset;
    if (existsSync(stage)) this.moveIntoPlace(stage, entry);
  }

  /** Writes the events' files into `stage` (emptied first), synced; their paths relative to it. */
  private async writeFiles(
    events: readonly StoredEvent[],
    stage: string,
    nextOffset: number,
  ): Promise<string[]> {
    rmSync(stage, { recursive: true, force: true });
    let files: string[] = [];
    if (events.length > 0) {
      this.conn ??= await this.options.instance.connect();
      const c = this.conn;
      await c.run(
        'CREATE OR REPLACE TEMP TABLE _lake_stage (id VARCHAR, log_offset BIGINT, source VARCHAR, event VARCHAR, date VARCHAR, j JSON)',
      );
      const ap = await c.createAppender('_lake_stage', null, 'temp');
      try {
        for (const e of events) {
          // Text that is not JSON fails in DuckDB's COPY below, which isolates the event.
          let parsed: { type?: string; event?: unknown } = {};
          try {
            parsed = JSON.parse(e.json) as typeof parsed;
          } catch {}
          const table =
            parsed.type === 'track'
              ? sanitizeName(String(parsed.event ?? ''))
              : (TABLE_OF_TYPE[String(parsed.type)] ?? 'other');
          ap.appendVarchar(e.messageId);
          ap.appendBigInt(BigInt(e.logOffset));
          ap.appendVarchar(e.sourceId);
          ap.appendVarchar(table);
          ap.appendVarchar(new Date(e.receivedAt).toISOString().slice(0, 10));
          ap.appendVarchar(e.json);
          ap.endRow();
        }
        ap.flushSync();
      } finally {
        ap.closeSync();
      }
      mkdirSync(stage, { recursive: true });
      try {
        await c.run(
          `COPY (SELECT ${SELECT_COLUMNS} FROM temp._lake_stage ORDER BY log_offset) TO ${sqlString(stage)}
           (FORMAT parquet, PARTITION_BY (source, event, date), FILENAME_PATTERN ${sqlString(`part-${nextOffset}-{i}`)})`,
        );
      } finally {
        await c.run('DROP TABLE IF EXISTS temp._lake_stage');
      }
      files = listFiles(stage).map((f) => relative(stage, f));
      for (const f of files) syncFile(join(stage, f));
    }
    return files;
  }

  private moveIntoPlace(stage: string, entry: LakeManifestEntry): void {
    for (const f of entry.files) {
      const from = join(stage, f);
      const to = join(this.options.root, f);
      if (!existsSync(from)) continue; // moved before the crash
      mkdirSync(dirname(to), { recursive: true });
      renameSync(from, to);
    }
    rmSync(stage, { recursive: true, force: true });
  }

  /**
   * Rewrites every Parquet file holding a person's rows without them (a deletion request):
   * each such file is written anew beside itself, synced, and renamed over the old one, so the
   * lake's readers see either file whole. A file left without rows stays, empty, because the
   * manifests list it. Returns the rows erased.
   */
  async erase(target: RowTarget): Promise<number> {
    if (!existsSync(this.options.root)) return 0;
    // A connection of its own: a load may be writing on the lake's at the same time.
    const c = await this.options.instance.connect();
    try {
      return await this.eraseOn(c, target);
    } finally {
      c.closeSync();
    }
  }

  private async eraseOn(c: DuckDBConnection, target: RowTarget): Promise<number> {
    const p = [
      JSON.stringify(target.userIds),
      JSON.stringify(target.anonymousIds),
      JSON.stringify(target.messageIds),
      JSON.stringify(target.values),
    ];
    const match = `${inList('user_id', 1)} OR ${inList('anonymous_id', 2)} OR ${inList('id', 3)} OR ${containsAny('CAST(x AS VARCHAR)', 4)}`;
    let n = 0;
    for (const file of listFiles(this.options.root)) {
      if (!file.endsWith('.parquet')) continue;
      const rel = relative(this.options.root, file);
      if (rel.startsWith('_staging') || rel.startsWith('_manifest')) continue;
      const src = `read_parquet(${sqlString(file)}, hive_partitioning = false) AS x`;
      const r = await c.runAndReadAll(`SELECT count(*) FROM ${src} WHERE ${match}`, p);
      const found = Number(r.getRows()[0]?.[0] ?? 0);
      if (found === 0) continue;
      const tmp = `${file}.erase-tmp`;
      await c.run(
        `COPY (SELECT x.* FROM ${src} WHERE NOT coalesce((${match}), false)) TO ${sqlString(tmp)} (FORMAT parquet)`,
        p,
      );
      syncFile(tmp);
      renameSync(tmp, file);
      syncFile(dirname(file));
      n += found;
    }
    return n;
  }

  async close(): Promise<void> {
    this.conn?.closeSync();
    this.conn = undefined;
  }
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name))
    .sort();
}

function syncFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
