import { z } from 'zod';
import { commonSourceFields } from '../common-schema.js';
import { PullSourceSettings, StreamSettings } from '../streams-schema.js';

export const FileFormat = z.enum(['csv', 'jsonl', 'parquet']);
export type FileFormat = z.infer<typeof FileFormat>;

/** One stream of a file source: the files matching a path or glob, all of one layout. */
export const FileStream = StreamSettings.extend({
  path: z
    .string()
    .min(1)
    .optional()
    .describe(
      'File or glob (data/tickets-*.csv.gz), relative to the configuration file. Optional for streams only fed by `tributary import` or uploads.',
    ),
  format: FileFormat.optional().describe(
    'csv, jsonl or parquet; default from the file name (.csv, .tsv, .jsonl, .ndjson, .parquet, with .gz).',
  ),
  delimiter: z
    .string()
    .min(1)
    .max(4)
    .optional()
    .describe('CSV field separator: "," (default), ";", "\\t" or "tab", "|".'),
  quote: z.string().length(1).default('"').describe('CSV quote character.'),
  header: z
    .boolean()
    .default(true)
    .describe('CSV: the first row names the columns. false: columns are column1, column2, …'),
  encoding: z.enum(['utf8', 'latin1']).default('utf8').describe('CSV and JSONL text encoding.'),
});
export type FileStream = z.infer<typeof FileStream>;

/** Files (CSV, JSONL, Parquet, gzipped or not) from a path, a glob or an upload. */
export const FileSourceSpec = z
  .object({
    ...commonSourceFields,
    type: z.literal('file').describe('file: rows of CSV, JSONL or Parquet files, as objects and/or events.'),
    streams: z.array(FileStream.strict()).min(1).describe('The file streams of the source.'),
    ...PullSourceSettings,
  })
  .strict();
export type FileSourceSpec = z.infer<typeof FileSourceSpec>;
