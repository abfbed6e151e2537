/**
 * The offset of a scope among the rows stored under a key for its workspace and for none
 * (older versions): its own; else, when no other log of the workspace stored one, the
 * unscoped row's, to be claimed (`claim`); else 0. Shared by the engines.
 */
export function scopedOffset(
  rows: readonly { workspace: string; log_id: string; next_offset: string | number | bigint }[],
  workspace: string,
  logId: string,
): { offset: number; claim: boolean; foreignLogs: string[] } {
  const mine = rows.find((r) => r.workspace === workspace && r.log_id === logId);
  const foreignLogs = rows
    .filter((r) => r.workspace === workspace && r.log_id !== logId && (r.workspace !== '' || r.log_id !== ''))
    .map((r) => r.log_id);
  if (mine) return { offset: Number(mine.next_offset), claim: false, foreignLogs };
  const unscoped = rows.find((r) => r.workspace === '' && r.log_id === '');
  if (unscoped && foreignLogs.length === 0 && (workspace !== '' || logId !== '')) {
    return { offset: Number(unscoped.next_offset), claim: true, foreignLogs };
  }
  return { offset: 0, claim: false, foreignLogs };
}
