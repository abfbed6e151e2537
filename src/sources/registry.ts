/**
 * The source kinds: one line each, its spec (light, for the configuration) and, for pull
 * sources, a loader of its connector (imported only when a source of the kind is read, so
 * the configuration never loads an engine). Adding a kind is one line here.
 */
import type { z } from 'zod';
import { FileSourceSpec } from './file/spec.js';
import { HttpSourceSpec } from './http/spec.js';
import { MysqlSourceSpec } from './mysql/spec.js';
import { PostgresSourceSpec } from './postgres/spec.js';
import type { PullSourceConnector } from './source.js';
import { WebhookSourceConfig } from './webhook/spec.js';

// Each kind's connector is typed by its own spec; the runner hands it the parsed config of that kind.
type LoadConnector = () => Promise<unknown>;

export const SOURCE_KINDS = [
  { type: 'http', spec: HttpSourceSpec },
  { type: 'webhook', spec: WebhookSourceConfig },
  {
    type: 'file',
    spec: FileSourceSpec,
    load: () => import('./file/file-connector.js').then((m) => m.fileConnector),
  },
  {
    type: 'postgres',
    spec: PostgresSourceSpec,
    load: () => import('./postgres/index.js').then((m) => m.postgresSource),
  },
  {
    // MySQL and MariaDB.
    type: 'mysql',
    spec: MysqlSourceSpec,
    load: () => import('./mysql/index.js').then((m) => m.mysqlSource),
  },
] as const satisfies readonly { type: string; spec: z.ZodObject; load?: LoadConnector }[];

type SpecsOf<T extends readonly unknown[]> = { [I in keyof T]: T[I] extends { spec: infer S } ? S : never };
/** The specs as a tuple, for the discriminated union of `sources:` (src/config/schema.ts). */
export const SOURCE_SPECS = SOURCE_KINDS.map((k) => k.spec) as unknown as SpecsOf<typeof SOURCE_KINDS>;

/** The connector of a pull kind; undefined for kinds that receive (http, webhook). */
export async function loadConnector(type: string): Promise<PullSourceConnector<unknown> | undefined> {
  const kind = SOURCE_KINDS.find((k) => k.type === type);
  if (!kind || !('load' in kind)) return undefined;
  return (await kind.load()) as PullSourceConnector<unknown>;
}
