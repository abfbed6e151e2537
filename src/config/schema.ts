import { z } from 'zod';
import { DestinationsConfig } from './destinations-schema.js';
import { Duration } from './duration.js';
import { IDENTITY_DEFAULTS, IdentityConfig } from './identity-schema.js';
import { SourceQualityConfig } from './quality-schema.js';

export { Duration, parseDuration } from './duration.js';

export const SourceConfig = z
  .object({
    id: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'use lowercase letters, digits, "-" and "_" (at most 63)')
      .describe('Stable identifier of the source; stored with every event.'),
    type: z.literal('http').describe("http: events sent to the collection API with this source's write key."),
    writeKey: z
      .string()
      .min(1)
      .describe('Public key that lets clients write to this source (and nothing else).'),
    name: z.string().optional().describe('Display name.'),
    enabled: z.boolean().default(true).describe('A disabled source answers 401 to its write key.'),
    ...SourceQualityConfig,
  })
  .strict();
export type SourceConfig = z.infer<typeof SourceConfig>;

export const ServerConfig = z
  .object({
    host: z.string().default('127.0.0.1').describe('Address to listen on; 0.0.0.0 to accept other machines.'),
    port: z
      .number()
      .int()
      .min(0)
      .max(65535)
      .default(8080)
      .describe('HTTP port of the collection and admin API.'),
    publicUrl: z
      .string()
      .url()
      .optional()
      .describe("URL clients use to reach the server, when it differs from the request's Host."),
  })
  .strict();
export type ServerConfig = z.infer<typeof ServerConfig>;

export const StorageConfig = z
  .object({
    dataDir: z.string().default('.tributary').describe('Folder of the embedded databases (DuckDB files).'),
    memoryLimit: z
      .string()
      .regex(/^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i, 'expected a size such as "512MB" or "2GB"')
      .default('2GB')
      .describe('Most memory the embedded DuckDB may use for its buffers; beyond it, it spills to disk.'),
  })
  .strict();

export const PipelineConfig = z
  .object({
    dedupe: z
      .object({
        window: Duration.prefault('7d').describe('How long a (source, messageId) pair is remembered.'),
      })
      .strict()
      .default({ window: 7 * 86_400_000 }),
  })
  .strict();

export const TributaryConfig = z
  .object({
    version: z
      .union([z.literal(1), z.string().regex(/^1(\.\d+)?$/, 'this release reads configuration version 1')])
      .describe('Configuration format version; this release reads 1.'),
    server: ServerConfig.default({ host: '127.0.0.1', port: 8080 }),
    storage: StorageConfig.default({ dataDir: '.tributary', memoryLimit: '2GB' }),
    sources: z.array(SourceConfig).min(1, 'declare at least one source'),
    pipeline: PipelineConfig.default({ dedupe: { window: 7 * 86_400_000 } }),
    destinations: DestinationsConfig,
    identity: IdentityConfig.default(IDENTITY_DEFAULTS).describe(
      'Identity resolution (docs/configuration.md).',
    ),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const ids = new Map<string, number>();
    const keys = new Map<string, number>();
    cfg.sources.forEach((s, i) => {
      if (ids.has(s.id)) {
        ctx.addIssue({
          code: 'custom',
          path: ['sources', i, 'id'],
          message: `duplicate source id "${s.id}"`,
        });
      }
      if (keys.has(s.writeKey)) {
        ctx.addIssue({
          code: 'custom',
          path: ['sources', i, 'writeKey'],
          message: `write key already used by sources[${keys.get(s.writeKey)}]`,
        });
      }
      ids.set(s.id, i);
      keys.set(s.writeKey, i);
    });
  });
export type TributaryConfig = z.infer<typeof TributaryConfig>;
