import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CONFORMANCE_STREAM,
  type ConformanceRow,
  sourceConformance,
} from '../conformance/source-conformance.js';

/** The file connector against the source conformance suite: each batch of rows is a new CSV file. */
sourceConformance('file (CSV)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-file-conf-'));
  let files = 0;
  const csv = (rows: readonly ConformanceRow[]) =>
    rows.map((r) => `${r.id},${r.email},"${r.name}"`).join('\n');
  const source = (path: string) => `  - id: files
    type: file
    streams:
      - name: rows
        path: ${path}
        ${CONFORMANCE_STREAM}`;
  return {
    sourceId: 'files',
    sourceYaml: source(join(dir, '*.csv')),
    async addRows(rows) {
      writeFileSync(
        join(dir, `part-${String(++files).padStart(4, '0')}.csv`),
        `id,email,name\n${csv(rows)}\n`,
      );
    },
    async addBadRows(good) {
      const half = Math.floor(good.length / 2);
      writeFileSync(
        join(dir, `part-${String(++files).padStart(4, '0')}.csv`),
        `id,email,name\n${csv(good.slice(0, half))}\n7x,bad@example.com,Not a number\n1000,too,many,fields\n${csv(good.slice(half))}\n`,
      );
      return ['TRIB_ERR_SOURCE_BAD_VALUE', 'TRIB_ERR_SOURCE_BAD_ROW'];
    },
    brokenSources: () => [
      { yaml: source(join(dir, 'nowhere', '*.csv')), code: 'TRIB_ERR_SOURCE_PATH_NOT_FOUND' },
    ],
    async cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
