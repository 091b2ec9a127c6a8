import { describe, expect, it } from "vitest";
import { folderTree } from "./tree";

describe("folderTree", () => {
  it("nests folders and counts prompts directly in and below each", () => {
    const root = folderTree([
      { folder: "", prompts: 2 },
      { folder: "support/billing", prompts: 3 },
      { folder: "support", prompts: 1 },
      { folder: "agents", prompts: 4 },
    ]);
    expect(root.total).toBe(10);
    expect(root.own).toBe(2);
    expect(root.children.map((c) => [c.path, c.own, c.total])).toEqual([
      ["agents", 4, 4],
      ["support", 1, 4],
    ]);
    expect(root.children[1]?.children.map((c) => [c.path, c.own, c.total])).toEqual([["support/billing", 3, 3]]);
  });
});
