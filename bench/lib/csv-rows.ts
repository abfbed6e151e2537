import { createWriteStream } from 'node:fs';

/** The file source benchmarks' CSV: `id,email,name,plan,amount,created_at`, a quoted comma in each name. */
export async function writeRowsCsv(file: string, rows: number): Promise<void> {
  const out = createWriteStream(file);
  const t0 = Date.UTC(2026, 0, 1);
  let chunk = 'id,email,name,plan,amount,created_at\n';
  for (let i = 1; i <= rows; i++) {
    chunk += `${i},user${i}@example.com,"Person ${i}, Jr",${i % 3 === 0 ? 'pro' : 'free'},${(i % 1000) / 10},${new Date(t0 + i * 1000).toISOString()}\n`;
    if (chunk.length > 1 << 20) {
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
      chunk = '';
    }
  }
  out.end(chunk);
  await new Promise<void>((r) => out.once('finish', () => r()));
}
