/** The folder tree from the API's flat list of folders and their counts. */

export interface FolderCount {
  folder: string;
  prompts: number;
}

export interface FolderNode {
  name: string;
  path: string;
  /** Prompts directly in this folder. */
  own: number;
  /** Prompts in this folder and below it. */
  total: number;
  children: FolderNode[];
}

export function folderTree(folders: FolderCount[]): FolderNode {
  const root: FolderNode = { name: "", path: "", own: 0, total: 0, children: [] };
  for (const { folder, prompts } of folders) {
    let node = root;
    node.total += prompts;
    if (folder === "") {
      node.own += prompts;
      continue;
    }
    const parts = folder.split("/").filter(Boolean);
    parts.forEach((part, i) => {
      const path = parts.slice(0, i + 1).join("/");
      let child = node.children.find((c) => c.name === part);
      if (!child) {
        child = { name: part, path, own: 0, total: 0, children: [] };
        node.children.push(child);
      }
      child.total += prompts;
      if (i === parts.length - 1) child.own += prompts;
      node = child;
    });
  }
  const sort = (node: FolderNode) => {
    node.children.sort((a, b) => a.name.localeCompare(b.name));
    node.children.forEach(sort);
  };
  sort(root);
  return root;
}
