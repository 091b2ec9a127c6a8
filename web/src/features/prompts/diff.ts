/**
 * The API's version diff made ready to draw: template lines with their
 * numbers on each side, long unchanged runs folded to a few lines of context,
 * and counts of what changed.
 */

export interface DiffLine {
  op: string;
  text: string;
  old_line?: number | null;
  new_line?: number | null;
}

export type DiffRow =
  | { kind: "line"; op: "equal" | "insert" | "delete"; text: string; oldLine: number | null; newLine: number | null }
  | { kind: "fold"; hidden: number; key: string };

export interface DiffSummary {
  inserted: number;
  deleted: number;
}

export function summarize(lines: DiffLine[]): DiffSummary {
  return {
    inserted: lines.filter((l) => l.op === "insert").length,
    deleted: lines.filter((l) => l.op === "delete").length,
  };
}

/** Rows to draw; runs of more than `2 * context + 1` unchanged lines are folded. */
export function diffRows(lines: DiffLine[], context = 3): DiffRow[] {
  const rows: DiffRow[] = [];
  const op = (l: DiffLine): "equal" | "insert" | "delete" =>
    l.op === "insert" || l.op === "delete" ? l.op : "equal";
  let i = 0;
  while (i < lines.length) {
    if (op(lines[i] as DiffLine) !== "equal") {
      const l = lines[i] as DiffLine;
      rows.push({ kind: "line", op: op(l), text: l.text, oldLine: l.old_line ?? null, newLine: l.new_line ?? null });
      i++;
      continue;
    }
    let end = i;
    while (end < lines.length && op(lines[end] as DiffLine) === "equal") end++;
    const run = lines.slice(i, end);
    const head = i === 0 ? 0 : context;
    const tail = end === lines.length ? 0 : context;
    if (run.length > head + tail + 1) {
      run.slice(0, head).forEach((l) => rows.push(equalRow(l)));
      rows.push({ kind: "fold", hidden: run.length - head - tail, key: `fold-${i}` });
      run.slice(run.length - tail).forEach((l) => rows.push(equalRow(l)));
    } else {
      run.forEach((l) => rows.push(equalRow(l)));
    }
    i = end;
  }
  return rows;
}

function equalRow(l: DiffLine): DiffRow {
  return { kind: "line", op: "equal", text: l.text, oldLine: l.old_line ?? null, newLine: l.new_line ?? null };
}

/** A field's JSON value for display: strings unquoted, absent as an em dash. */
export function fieldValue(json: string): string {
  if (json === "") return "—";
  try {
    const value: unknown = JSON.parse(json);
    return typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    return json;
  }
}
