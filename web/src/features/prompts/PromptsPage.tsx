/** Prompts: a folder tree, tags, search, and a virtualised list of thousands. */
import { useEffect, useMemo, useRef, useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { useVirtualizer } from "@tanstack/react-virtual";
import { useQueryClient } from "@tanstack/react-query";
import { EmptyState, ErrorAlert, Icon, Loading, relativeTime } from "../../components/ui";
import { useNow } from "../../auth/AuthContext";
import { folderName, useFolders, usePromptList, type Prompt } from "./api";
import { folderTree, type FolderNode } from "./tree";
import { ImportDialog, exportPrompts } from "./ImportExport";
import { withChanges } from "../../app/url";

const ROW_HEIGHT = 52;

function plural(n: number, noun: string): string {
  return `${n.toLocaleString("en-US")} ${noun}${n === 1 ? "" : "s"}`;
}

export default function PromptsPage() {
  const [params, setParams] = useSearchParams();
  const folder = params.get("folder") ?? undefined;
  const tag = params.get("tag") ?? undefined;
  const q = params.get("q") ?? "";
  const [search, setSearch] = useState(q);
  const [importing, setImporting] = useState(false);
  const [exportError, setExportError] = useState<unknown>(null);
  const navigate = useNavigate();
  const queryClient = useQueryClient();

  // The search box updates the URL (and so the query) after a short pause.
  useEffect(() => {
    const timer = window.setTimeout(() => {
      if (search === q) return;
      setParams(withChanges(params, { q: search.trim() || null }), { replace: true });
    }, 250);
    return () => window.clearTimeout(timer);
  }, [search, q, params, setParams]);

  // After an import, lists wait until they include it (read your write).
  const [minPosition, setMinPosition] = useState<string | undefined>();
  const folders = useFolders(minPosition);
  const list = usePromptList({ folder, tag, q: q || undefined }, minPosition);
  const prompts = useMemo(() => list.data?.pages.flatMap((p) => p.prompts) ?? [], [list.data]);
  const tree = useMemo(() => folderTree(folders.data?.folders ?? []), [folders.data]);
  const filtered = Boolean(folder !== undefined || tag || q);
  const nothingAtAll = folders.data && tree.total === 0 && !filtered;

  const link = (changes: Record<string, string | undefined>) => {
    const s = withChanges(params, changes).toString();
    return s ? `/prompts?${s}` : "/prompts";
  };

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Prompts</h1>
          <p className="sub">
            {folders.data ? `${plural(tree.total, "prompt")} in ${plural(folders.data.folders.filter((f) => f.folder).length, "folder")}` : " "}
          </p>
        </div>
        <div className="actions">
          <button type="button" className="btn" onClick={() => setImporting(true)}>
            <Icon name="upload" /> Import
          </button>
          <button
            type="button"
            className="btn"
            onClick={() => {
              setExportError(null);
              exportPrompts({ folder }, "yaml").catch(setExportError);
            }}
          >
            <Icon name="download" /> Export{folder ? " folder" : ""}
          </button>
          <Link className="btn primary" to={`/prompts/new${folder ? `?folder=${encodeURIComponent(folder)}` : ""}`}>
            <Icon name="plus" /> New prompt
          </Link>
        </div>
      </div>
      <ErrorAlert error={exportError} title="Export failed" />
      <ImportDialog
        open={importing}
        onClose={() => setImporting(false)}
        onImported={(position) => {
          setMinPosition(position || undefined);
          void queryClient.invalidateQueries({ queryKey: ["prompts"] });
        }}
      />
      {nothingAtAll ? (
        <FirstRun onImport={() => setImporting(true)} onCreate={() => navigate("/prompts/new")} />
      ) : (
        <div className="split">
          <aside className="card folders" aria-label="Folders and tags">
            <nav className="tree" aria-label="Folders">
              <ul>
                <li>
                  <Link to={link({ folder: undefined })} aria-current={folder === undefined ? "true" : undefined}>
                    <span>All prompts</span>
                    <span className="count">{tree.total}</span>
                  </Link>
                </li>
                {tree.own > 0 && tree.children.length > 0 && (
                  <li>
                    <Link to={link({ folder: "" })} aria-current={folder === "" ? "true" : undefined}>
                      <span>(root)</span>
                      <span className="count">{tree.own}</span>
                    </Link>
                  </li>
                )}
                {tree.children.map((node) => (
                  <TreeNode key={node.path} node={node} current={folder} link={link} />
                ))}
              </ul>
              {folders.isLoading && <Loading label="Loading folders…" />}
              {folders.data?.truncated && <p className="muted small">Only the first 5,000 folders are shown.</p>}
            </nav>
            {(folders.data?.tags.length ?? 0) > 0 && (
              <>
                <h2 className="label" style={{ padding: "0 12px" }}>
                  Tags
                </h2>
                <div className="tags">
                  {folders.data?.tags.map((t) => (
                    <Link
                      key={t.tag}
                      className="chip"
                      to={link({ tag: tag === t.tag ? undefined : t.tag })}
                      aria-current={tag === t.tag ? "true" : undefined}
                    >
                      {t.tag} <span className="visually-hidden">({plural(t.prompts, "prompt")})</span>
                    </Link>
                  ))}
                </div>
              </>
            )}
          </aside>
          <section className="card" aria-label="Prompt list">
            <div className="card-head">
              <div className="field grow">
                <label htmlFor="prompt-search" className="visually-hidden">
                  Search prompts
                </label>
                <input
                  id="prompt-search"
                  type="search"
                  placeholder="Search name, description, tags, template…"
                  value={search}
                  onChange={(e) => setSearch(e.target.value)}
                />
              </div>
              {(folder !== undefined || tag) && (
                <Link className="btn small ghost" to={link({ folder: undefined, tag: undefined })}>
                  Clear filters
                </Link>
              )}
            </div>
            <ErrorAlert error={list.error} title="Could not load prompts" />
            {list.isLoading ? (
              <div className="card-body">
                <Loading label="Loading prompts…" />
              </div>
            ) : prompts.length === 0 ? (
              <EmptyState title="No prompts match">
                {q ? `Nothing matches “${q}”. ` : ""}Try another folder, tag or search.
              </EmptyState>
            ) : (
              <PromptList
                prompts={prompts}
                hasMore={Boolean(list.hasNextPage)}
                loadingMore={list.isFetchingNextPage}
                loadMore={() => void list.fetchNextPage()}
              />
            )}
          </section>
        </div>
      )}
    </div>
  );
}

function TreeNode(props: { node: FolderNode; current: string | undefined; link: (c: Record<string, string | undefined>) => string }) {
  const { node, current } = props;
  const onPath = current !== undefined && (current === node.path || current.startsWith(`${node.path}/`));
  const [open, setOpen] = useState(onPath);
  const expanded = open || onPath;
  return (
    <li>
      <div className="tree-item">
        {node.children.length > 0 ? (
          <button
            type="button"
            className="twisty"
            aria-expanded={expanded}
            aria-label={`${expanded ? "Collapse" : "Expand"} ${node.path}`}
            onClick={() => setOpen(!expanded)}
          >
            {expanded ? "▾" : "▸"}
          </button>
        ) : (
          <span className="twisty" aria-hidden="true" />
        )}
        <Link to={props.link({ folder: node.path })} aria-current={current === node.path ? "true" : undefined}>
          <span>{node.name}</span>
          <span className="count">{node.total}</span>
        </Link>
      </div>
      {expanded && node.children.length > 0 && (
        <ul>
          {node.children.map((child) => (
            <TreeNode key={child.path} node={child} current={current} link={props.link} />
          ))}
        </ul>
      )}
    </li>
  );
}

function PromptList(props: { prompts: Prompt[]; hasMore: boolean; loadingMore: boolean; loadMore: () => void }) {
  const scroller = useRef<HTMLDivElement>(null);
  const now = useNow(30_000);
  const virtualizer = useVirtualizer({
    count: props.prompts.length + (props.hasMore ? 1 : 0),
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 10,
  });
  const items = virtualizer.getVirtualItems();
  const last = items.at(-1);
  const { hasMore, loadingMore, loadMore, prompts } = props;
  useEffect(() => {
    if (last && last.index >= prompts.length - 20 && hasMore && !loadingMore) loadMore();
  }, [last, prompts.length, hasMore, loadingMore, loadMore]);

  return (
    <div>
      <div className="list-row list-head" aria-hidden="true">
        <span>Name</span>
        <span className="hide-sm">Folder</span>
        <span className="hide-sm">Labels</span>
        <span>Version</span>
        <span className="hide-sm">Updated</span>
      </div>
      <div
        ref={scroller}
        style={{ height: virtualizer.getTotalSize(), maxHeight: "min(65vh, 720px)", overflow: "auto" }}
        data-testid="prompt-scroller"
      >
        <div role="list" aria-label="Prompts" style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {items.map((item) => {
            const prompt = prompts[item.index];
            return (
              <div
                key={item.key}
                role="listitem"
                aria-setsize={hasMore ? -1 : prompts.length}
                aria-posinset={item.index + 1}
                style={{ position: "absolute", top: 0, left: 0, right: 0, transform: `translateY(${item.start}px)` }}
              >
                {prompt ? (
                  <Link className="list-row" to={`/prompts/${prompt.id}`}>
                    <span style={{ minWidth: 0 }}>
                      <span className="name">{prompt.name}</span>
                      {prompt.description && <span className="desc">{prompt.description}</span>}
                    </span>
                    <span className="cell hide-sm muted" title={prompt.folder}>
                      {prompt.folder ? folderName(prompt.folder) : "—"}
                    </span>
                    <span className="cell hide-sm">
                      {Object.entries(prompt.labels).map(([label, v]) => (
                        <span key={label} className="badge label" style={{ marginRight: 4 }}>
                          {label} v{v}
                        </span>
                      ))}
                    </span>
                    <span className="cell">
                      v{prompt.latest_version}
                    </span>
                    <span className="cell hide-sm muted small">
                      {relativeTime(prompt.updated_at, now)}
                    </span>
                  </Link>
                ) : (
                  <div className="list-row">
                    <Loading label="Loading more…" />
                  </div>
                )}
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}

function FirstRun(props: { onImport: () => void; onCreate: () => void }) {
  return (
    <section aria-labelledby="first-run" className="stack">
      <div>
        <h2 id="first-run">Get started</h2>
        <p className="muted">Your organization has no prompts yet. Here is what to do next:</p>
      </div>
      <div className="welcome">
        <div className="card">
          <div className="card-body">
            <h3>1. Write a prompt</h3>
            <p className="muted small">
              A template with <code>{"{{variables}}"}</code>, a model and its settings. Every save is a numbered version you
              can diff and roll back.
            </p>
            <button type="button" className="btn primary" onClick={props.onCreate}>
              Create your first prompt
            </button>
          </div>
        </div>
        <div className="card">
          <div className="card-body">
            <h3>2. Try it in the playground</h3>
            <p className="muted small">
              Run any prompt or plain messages. The built-in <code>mock/echo</code> and <code>mock/lorem</code> models work
              offline, with no provider key.
            </p>
            <Link className="btn" to="/playground">
              Open the playground
            </Link>
          </div>
        </div>
        <div className="card">
          <div className="card-body">
            <h3>3. Bring what you have</h3>
            <p className="muted small">
              Import a JSON or YAML export, or sync a folder of prompt files from CI with{" "}
              <code>promptops prompts push DIR</code>.
            </p>
            <button type="button" className="btn" onClick={props.onImport}>
              Import a file
            </button>
          </div>
        </div>
      </div>
    </section>
  );
}
