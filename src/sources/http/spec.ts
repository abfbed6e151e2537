import { z } from 'zod';
import { commonSourceFields } from '../common-schema.js';

/** The tracking API's source: SDKs send events to the collection API with its write key. */
export const HttpSourceSpec = z
  .object({
    ...commonSourceFields,
    type: z.literal('http').describe("http: events sent to the collection API with this source's write key."),
    writeKey: z
      .string()
      .min(1)
      .describe('Public key that lets clients write to this source (and nothing else).'),
  })
  .strict();
export type HttpSourceSpec = z.infer<typeof HttpSourceSpec>;
