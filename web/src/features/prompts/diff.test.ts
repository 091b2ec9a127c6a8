import { describe, expect, it } from "vitest";
import { diffRows, fieldValue, summarize, type DiffLine } from "./diff";

const equal = (n: number): DiffLine => ({ op: "equal", text: `line ${n}`, old_line: n, new_line: n });

describe("diffRows", () => {
  it("keeps changes with their line numbers on each side", () => {
    const rows = diffRows([
      equal(1),
      { op: "delete", text: "old", old_line: 2 },
      { op: "insert", text: "new", new_line: 2 },
    ]);
    expect(rows).toEqual([
      { kind: "line", op: "equal", text: "line 1", oldLine: 1, newLine: 1 },
      { kind: "line", op: "delete", text: "old", oldLine: 2, newLine: null },
      { kind: "line", op: "insert", text: "new", oldLine: null, newLine: 2 },
    ]);
  });

  it("folds long unchanged runs to three lines of context around changes", () => {
    const lines = [
      ...Array.from({ length: 10 }, (_, i) => equal(i + 1)),
      { op: "insert", text: "added", new_line: 11 },
      ...Array.from({ length: 10 }, (_, i) => equal(i + 11)),
    ];
    const rows = diffRows(lines);
    expect(rows[0]).toEqual({ kind: "fold", hidden: 7, key: "fold-0" });
    expect(rows.filter((r) => r.kind === "line").map((r) => (r.kind === "line" ? r.text : ""))).toEqual([
      "line 8", "line 9", "line 10", "added", "line 11", "line 12", "line 13",
    ]);
    expect(rows.at(-1)).toEqual({ kind: "fold", hidden: 7, key: "fold-11" });
  });

  it("counts insertions and deletions", () => {
    expect(summarize([equal(1), { op: "insert", text: "a" }, { op: "delete", text: "b" }, { op: "insert", text: "c" }])).toEqual({
      inserted: 2,
      deleted: 1,
    });
  });
});

describe("fieldValue", () => {
  it("shows strings plainly, other JSON compactly, absence as a dash", () => {
    expect(fieldValue('"mock/echo"')).toBe("mock/echo");
    expect(fieldValue("0.7")).toBe("0.7");
    expect(fieldValue("")).toBe("—");
  });
});
