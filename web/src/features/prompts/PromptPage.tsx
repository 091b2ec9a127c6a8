/** One prompt: edit (a new version), history, diff, labels, archive, export. */
import { useEffect, useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "../../api/client";
import { ApiError } from "../../api/problem";
import { useAuth, useNow } from "../../auth/AuthContext";
import { Dialog, EmptyState, ErrorAlert, Field, Icon, Loading, Tabs, relativeTime } from "../../components/ui";
import { usePrompt, useVersion, useVersions, type Prompt } from "./api";
import { DiffView } from "./DiffView";
import { draftBody, draftFromVersion, type Draft } from "./draft";
import { exportPrompts } from "./ImportExport";
import { Labels } from "./Labels";
import { withChanges } from "../../app/url";
import { VersionEditor, shownInline } from "./VersionEditor";

type Tab = "editor" | "history" | "diff";

export default function PromptPage() {
  const { promptId = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const tab = (params.get("tab") as Tab | null) ?? "editor";
  const prompt = usePrompt(promptId);
  const setTab = (next: Tab, extra: Record<string, string> = {}) =>
    setParams(withChanges(params, { ...extra, tab: next }), { replace: next === tab });

  if (prompt.isLoading) {
    return (
      <div className="page">
        <Loading label="Loading prompt…" />
      </div>
    );
  }
  if (prompt.error || !prompt.data) {
    return (
      <div className="page">
        {prompt.error instanceof ApiError && prompt.error.status === 404 ? (
          <EmptyState title="No such prompt" action={<Link to="/prompts">Back to prompts</Link>}>
            It does not exist in this organization, or it was deleted.
          </EmptyState>
        ) : (
          <ErrorAlert error={prompt.error} title="Could not load the prompt" />
        )}
      </div>
    );
  }
  const p = prompt.data;
  const latest = p.latest_version;
  const from = Number(params.get("from") ?? Math.max(1, latest - 1));
  const to = Number(params.get("to") ?? latest);

  return (
    <div className="page">
      <Header prompt={p} />
      <Tabs
        label="Prompt views"
        current={tab}
        onChange={(t) => setTab(t)}
        tabs={[
          { id: "editor", label: "Editor" },
          { id: "history", label: `History (${latest})` },
          { id: "diff", label: "Diff" },
        ]}
      />
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`} className="stack">
        {tab === "editor" && <EditorTab prompt={p} />}
        {tab === "history" && (
          <div className="editor-grid">
            <History prompt={p} onCompare={(a, b) => setTab("diff", { from: String(a), to: String(b) })} />
            <Labels prompt={p} />
          </div>
        )}
        {tab === "diff" && (
          <DiffView
            promptId={p.id}
            latest={latest}
            from={from}
            to={to}
            onChange={(a, b) => setTab("diff", { from: String(a), to: String(b) })}
          />
        )}
      </div>
    </div>
  );
}

function Header({ prompt }: { prompt: Prompt }) {
  const { can } = useAuth();
  const queryClient = useQueryClient();
  const [archiving, setArchiving] = useState(false);
  const [reason, setReason] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [exporting, setExporting] = useState<unknown>(null);
  const folders = prompt.folder.split("/").filter(Boolean);

  const archiveOrRestore = async () => {
    setError(null);
    try {
      const path = { prompt_id: prompt.id };
      if (prompt.archived) await unwrap(api.POST("/api/v1/prompts/{prompt_id}/restore", { params: { path }, body: { reason } }));
      else await unwrap(api.POST("/api/v1/prompts/{prompt_id}/archive", { params: { path }, body: { reason } }));
      // Closed before the prompt is fetched again, so the dialog never shows
      // the opposite action for a moment.
      setArchiving(false);
      setReason("");
      await queryClient.invalidateQueries({ queryKey: ["prompt", prompt.id] });
      void queryClient.invalidateQueries({ queryKey: ["prompts"] });
    } catch (e) {
      setError(e);
    }
  };

  return (
    <div className="page-head">
      <div style={{ minWidth: 0 }}>
        <p className="sub">
          <Link to="/prompts">Prompts</Link>
          {folders.map((f, i) => (
            <span key={i}>
              {" / "}
              <Link to={`/prompts?folder=${encodeURIComponent(folders.slice(0, i + 1).join("/"))}`}>{f}</Link>
            </span>
          ))}
          {" /"}
        </p>
        <h1 style={{ display: "flex", gap: 8, alignItems: "center", flexWrap: "wrap" }}>
          {prompt.name}
          {prompt.archived && <span className="badge bad">archived</span>}
          {Object.entries(prompt.labels).map(([label, v]) => (
            <span key={label} className="badge label">
              {label} → v{v}
            </span>
          ))}
        </h1>
        {prompt.description && <p className="sub">{prompt.description}</p>}
        <ErrorAlert error={exporting} title="Export failed" />
      </div>
      <div className="actions">
        <Link className="btn primary" to={`/playground?prompt=${prompt.id}`}>
          <Icon name="play" /> Open in playground
        </Link>
        <button type="button" className="btn" onClick={() => exportPrompts({ promptId: prompt.id }, "yaml").catch(setExporting)}>
          <Icon name="download" /> Export YAML
        </button>
        <button type="button" className="btn" onClick={() => exportPrompts({ promptId: prompt.id }, "json").catch(setExporting)}>
          Export JSON
        </button>
        <button
          type="button"
          className={`btn${prompt.archived ? "" : " danger"}`}
          disabled={!can("archive")}
          onClick={() => setArchiving(true)}
        >
          <Icon name="archive" /> {prompt.archived ? "Restore" : "Archive"}
        </button>
      </div>
      <Dialog
        open={archiving}
        title={prompt.archived ? `Restore ${prompt.name}` : `Archive ${prompt.name}`}
        onClose={() => setArchiving(false)}
        footer={
          <>
            <button type="button" className="btn" onClick={() => setArchiving(false)}>
              Cancel
            </button>
            <button type="button" className={`btn ${prompt.archived ? "primary" : "danger"}`} onClick={() => void archiveOrRestore()}>
              {prompt.archived ? "Restore" : "Archive"}
            </button>
          </>
        }
      >
        <p className="small">
          {prompt.archived
            ? "The prompt returns to lists and can be run and edited again."
            : "An archived prompt leaves lists and cannot be run; its versions and history are kept and it can be restored."}
        </p>
        <Field label="Reason">
          {({ id }) => <input id={id} value={reason} onChange={(e) => setReason(e.target.value)} />}
        </Field>
        <ErrorAlert error={error} />
      </Dialog>
    </div>
  );
}

function EditorTab({ prompt }: { prompt: Prompt }) {
  const { can } = useAuth();
  const queryClient = useQueryClient();
  const latest = useVersion(prompt.id, prompt.latest_version);
  const [draft, setDraft] = useState<Draft | null>(null);
  const [basedOn, setBasedOn] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState<number | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (latest.data && basedOn !== latest.data.version.version) {
      setDraft(draftFromVersion(latest.data.version));
      setBasedOn(latest.data.version.version ?? 0);
    }
  }, [latest.data, basedOn]);

  if (latest.isLoading || !draft) return <Loading label="Loading the latest version…" />;
  if (latest.error) return <ErrorAlert error={latest.error} />;

  const save = async () => {
    setBusy(true);
    setError(null);
    setSaved(null);
    try {
      const created = await unwrap(
        api.POST("/api/v1/prompts/{prompt_id}/versions", {
          params: { path: { prompt_id: prompt.id } },
          body: { ...draftBody(draft), expected_latest: basedOn },
        }),
      );
      setSaved(created.version.version ?? null);
      await queryClient.invalidateQueries({ queryKey: ["prompt", prompt.id] });
      void queryClient.invalidateQueries({ queryKey: ["prompts"] });
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const conflict = error instanceof ApiError && error.status === 409;

  return (
    <VersionEditor
      draft={draft}
      onChange={(d) => {
        setSaved(null);
        setDraft(d);
      }}
      problem={error instanceof ApiError ? error.problem : null}
      footer={
        <>
          {prompt.archived && (
            <div className="alert info" role="status">
              This prompt is archived: restore it to save versions or run it.
            </div>
          )}
          {saved !== null && (
            <div className="alert ok" role="status">
              Saved as version {saved}.
            </div>
          )}
          {conflict ? (
            <div className="alert error" role="alert">
              Someone saved a newer version while you edited (you started from v{basedOn}). Copy your changes, then{" "}
              <button type="button" className="btn small" onClick={() => setBasedOn(0)}>
                load the latest
              </button>
            </div>
          ) : shownInline(error) ? (
            <div className="alert error" role="alert">
              Not saved: fix the problems marked in the template.
            </div>
          ) : (
            <ErrorAlert error={error} title="Not saved" />
          )}
          <button
            type="button"
            className="btn primary"
            disabled={busy || prompt.archived || !can("write")}
            title={can("write") ? undefined : "Your role cannot save versions"}
            onClick={() => void save()}
          >
            {busy ? "Saving…" : `Save version ${prompt.latest_version + 1}`}
          </button>
          <p className="muted small">Editing from v{basedOn}. Saving never changes a label; move one from History.</p>
        </>
      }
    />
  );
}

function History(props: { prompt: Prompt; onCompare: (from: number, to: number) => void }) {
  const { prompt } = props;
  const versions = useVersions(prompt.id);
  const now = useNow(30_000);
  const labelsAt = new Map<number, string[]>();
  for (const [label, v] of Object.entries(prompt.labels)) labelsAt.set(v, [...(labelsAt.get(v) ?? []), label]);
  const all = versions.data?.pages.flatMap((p) => p.versions) ?? [];
  return (
    <section className="card" aria-labelledby="history-title">
      <div className="card-head">
        <h2 id="history-title">Versions</h2>
      </div>
      <ErrorAlert error={versions.error} />
      {versions.isLoading && (
        <div className="card-body">
          <Loading />
        </div>
      )}
      <ol style={{ listStyle: "none", margin: 0, padding: 0 }}>
        {all.map((v) => {
          const n = v.version ?? 0;
          return (
            <li key={n} style={{ padding: "10px 16px", borderBottom: "1px solid var(--border)" }} className="row">
              <div className="grow">
                <div className="row" style={{ gap: 8, alignItems: "center" }}>
                  <strong>v{n}</strong>
                  {(labelsAt.get(n) ?? []).map((l) => (
                    <span key={l} className="badge label">
                      {l}
                    </span>
                  ))}
                  {v.copied_from ? <span className="badge">copy of v{v.copied_from}</span> : null}
                  <span className="muted small">{v.model?.model}</span>
                </div>
                <div className="small">{v.message || <span className="muted">(no commit message)</span>}</div>
                <div className="muted small">
                  {v.author.kind} {v.author.id.slice(0, 8)} · {relativeTime(v.created_at, now)}
                </div>
              </div>
              <div className="actions">
                {n > 1 && (
                  <button type="button" className="btn small" onClick={() => props.onCompare(n - 1, n)} aria-label={`Compare v${n - 1} with v${n}`}>
                    Diff with v{n - 1}
                  </button>
                )}
                <Link className="btn small" to={`/playground?prompt=${prompt.id}&version=${n}`} aria-label={`Run v${n} in the playground`}>
                  Run
                </Link>
              </div>
            </li>
          );
        })}
      </ol>
      {versions.hasNextPage && (
        <div className="card-body">
          <button type="button" className="btn small" onClick={() => void versions.fetchNextPage()}>
            Load older versions
          </button>
        </div>
      )}
    </section>
  );
}
