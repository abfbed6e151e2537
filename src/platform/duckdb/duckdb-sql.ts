/** Quoting for the SQL the DuckDB adapters build (values are bound as parameters wherever DuckDB allows). */

/** A quoted identifier: `"name"`, inner quotes doubled. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A string literal, for the places a parameter cannot go (ATTACH paths, multi-statement runs). */
export function sqlString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
