/**
 * The playground: run a saved prompt (at a label or version, its variables
 * filled in) or plain messages on any model of the catalog, streamed; the same
 * input on 2–4 models or versions side by side; the prompt's last 50 runs,
 * any of them reopened; and the result saved as a new version.
 */
import { useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "../../api/client";
import { useAuth, useNow } from "../../auth/AuthContext";
import { Dialog, ErrorAlert, Field, Icon, Loading, formatUsd, relativeTime } from "../../components/ui";
import { ModelOptions, useModels } from "../models";
import { draftBody, draftFromVersion, draftTexts } from "../prompts/draft";
import { initialValues, missingVariables, variableFields, variablesToSend } from "../prompts/template";
import { RunOutput } from "./RunOutput";
import { withChanges } from "../../app/url";
import { useRunStream, type ExecuteBody, type Run } from "./stream";

type Variant = string; // `model:<id>` or `version:<n>`

const MAX_COLUMNS = 4;

export default function PlaygroundPage() {
  const [params, setParams] = useSearchParams();
  const promptId = params.get("prompt") ?? "";
  const versionParam = params.get("version");
  const labelParam = params.get("label");
  const models = useModels();
  const { can } = useAuth();

  // An empty choice (no prompt, the latest version) leaves the URL without it.
  const setParam = (changes: Record<string, string | null>) => {
    const cleared = Object.fromEntries(Object.entries(changes).map(([k, v]) => [k, v || null]));
    setParams(withChanges(params, cleared), { replace: true });
  };

  // ---- the input ----
  const [search, setSearch] = useState("");
  const prompts = useQuery({
    queryKey: ["prompts", "picker", search],
    queryFn: () => unwrap(api.GET("/api/v1/prompts", { params: { query: { page_size: 50, q: search || undefined } } })),
  });
  const prompt = useQuery({
    queryKey: ["prompt", promptId],
    enabled: Boolean(promptId),
    queryFn: () => unwrap(api.GET("/api/v1/prompts/{prompt_id}", { params: { path: { prompt_id: promptId } } })),
  });
  const resolved = useQuery({
    queryKey: ["prompt", promptId, "resolve", versionParam, labelParam],
    enabled: Boolean(promptId),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/prompts/resolve", {
          params: {
            query: {
              prompt_id: promptId,
              version: versionParam ? Number(versionParam) : undefined,
              label: versionParam ? undefined : labelParam || undefined,
            },
          },
        }),
      ),
  });
  const version = promptId ? resolved.data?.version : undefined;
  const fields = useMemo(
    () => (version ? variableFields(version.variables ?? [], draftTexts(draftFromVersion(version))) : []),
    [version],
  );
  const [values, setValues] = useState<Record<string, string>>({});
  useEffect(() => setValues((previous) => initialValues(fields, previous)), [fields]);

  const [system, setSystem] = useState("");
  const [message, setMessage] = useState("");
  const [model, setModel] = useState(params.get("model") ?? "");
  const [temperature, setTemperature] = useState("");
  const [maxTokens, setMaxTokens] = useState("");
  const defaultModel = version?.model?.model || models.data?.[0]?.id || "mock/echo";
  const chosenModel = model || defaultModel;

  // ---- side by side ----
  const [compare, setCompare] = useState(false);
  const [variants, setVariants] = useState<Variant[]>([]);
  useEffect(() => {
    if (compare && variants.length === 0) {
      const other = models.data?.find((m) => m.id !== chosenModel)?.id ?? chosenModel;
      setVariants([`model:${chosenModel}`, `model:${other}`]);
    }
  }, [compare, variants.length, models.data, chosenModel]);

  // A finished run shows in the history once the run history has read it
  // from the log: the history polls until every run finished here is in it.
  const [awaited, setAwaited] = useState<string[]>([]);
  const refreshHistory = (finished: Run | null) => {
    if (finished) setAwaited((ids) => [...ids.slice(-7), finished.id]);
  };
  const single = useRunStream(refreshHistory);
  const columns = [useRunStream(refreshHistory), useRunStream(refreshHistory), useRunStream(refreshHistory), useRunStream(refreshHistory)];
  const running = single.state.status === "running" || columns.some((c) => c.state.status === "running");

  const parameters = () => ({
    temperature: temperature === "" ? undefined : Number(temperature),
    max_tokens: maxTokens === "" ? undefined : Number(maxTokens),
  });
  const body = (variant?: Variant): ExecuteBody => {
    const variantModel = variant?.startsWith("model:") ? variant.slice(6) : undefined;
    const variantVersion = variant?.startsWith("version:") ? Number(variant.slice(8)) : undefined;
    if (promptId) {
      return {
        prompt_id: promptId,
        version: variantVersion ?? (versionParam ? Number(versionParam) : undefined),
        label: variantVersion || versionParam ? undefined : labelParam || undefined,
        variables: variablesToSend(fields, values),
        model: variantModel ?? (variantVersion ? undefined : model || undefined),
        parameters: parameters(),
      };
    }
    return {
      messages: [...(system.trim() ? [{ role: "system", content: system }] : []), { role: "user", content: message }],
      model: variantModel ?? chosenModel,
      parameters: parameters(),
    };
  };

  const run = (event?: FormEvent) => {
    event?.preventDefault();
    if (compare) variants.forEach((v, i) => void columns[i]?.start({ kind: "execute", body: body(v) }));
    else void single.start({ kind: "execute", body: body() });
  };
  const stop = () => {
    single.stop();
    columns.forEach((c) => c.stop());
  };
  const missing = missingVariables(fields, values);

  // ---- history ----
  const [reopened, setReopened] = useState<string | null>(null);
  const reopen = (r: Run) => {
    setCompare(false);
    setReopened(r.id);
    if (r.prompt_id) {
      setParam({ prompt: r.prompt_id, version: String(r.prompt_version), label: null });
      setValues((v) => ({ ...v, ...r.variables }));
    }
    setModel(r.model);
    single.reset({ status: r.status === "failed" ? "failed" : "done", text: r.output, run: r });
  };

  const variantLabel = (v: Variant) => (v.startsWith("model:") ? v.slice(6) : `v${v.slice(8)}`);

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Playground</h1>
          <p className="sub">Every run is recorded with its tokens and cost, like any other.</p>
        </div>
        <div className="actions">
          <button
            type="button"
            className="btn"
            aria-pressed={compare}
            onClick={() => {
              setCompare(!compare);
              setVariants([]);
            }}
          >
            <Icon name="columns" /> Side by side
          </button>
          <SaveButton
            promptId={promptId}
            version={version}
            model={model}
            temperature={temperature}
            maxTokens={maxTokens}
            system={system}
            message={message}
            chosenModel={chosenModel}
            disabled={!can("write")}
          />
        </div>
      </div>
      <div className="play">
        <form className="card" aria-label="Run settings" onSubmit={run}>
          <div className="card-body stack">
            <Field label="Find a prompt">
              {({ id }) => (
                <input id={id} type="search" placeholder="Search by name…" value={search} onChange={(e) => setSearch(e.target.value)} />
              )}
            </Field>
            <Field label="Prompt">
              {({ id }) => (
                <select
                  id={id}
                  value={promptId}
                  onChange={(e) => {
                    setParam({ prompt: e.target.value, version: null, label: null });
                    setModel("");
                  }}
                >
                  <option value="">None — write messages</option>
                  {promptId && prompt.data && !prompts.data?.prompts.some((p) => p.id === promptId) && (
                    <option value={promptId}>{prompt.data.folder ? `${prompt.data.folder}/` : ""}{prompt.data.name}</option>
                  )}
                  {prompts.data?.prompts.map((p) => (
                    <option key={p.id} value={p.id}>
                      {p.folder ? `${p.folder}/` : ""}
                      {p.name}
                    </option>
                  ))}
                </select>
              )}
            </Field>
            {promptId && prompt.data && (
              <Field label="Version or label">
                {({ id }) => (
                  <select
                    id={id}
                    value={versionParam ? `v:${versionParam}` : labelParam ? `l:${labelParam}` : ""}
                    onChange={(e) => {
                      const v = e.target.value;
                      setParam({
                        version: v.startsWith("v:") ? v.slice(2) : null,
                        label: v.startsWith("l:") ? v.slice(2) : null,
                      });
                    }}
                  >
                    <option value="">latest (v{prompt.data.latest_version})</option>
                    {Object.entries(prompt.data.labels).map(([l, v]) => (
                      <option key={l} value={`l:${l}`}>
                        {l} (v{v})
                      </option>
                    ))}
                    {Array.from({ length: prompt.data.latest_version }, (_, i) => prompt.data.latest_version - i).map((v) => (
                      <option key={v} value={`v:${v}`}>
                        v{v}
                      </option>
                    ))}
                  </select>
                )}
              </Field>
            )}
            {promptId && resolved.isLoading && <Loading label="Loading the version…" />}
            <ErrorAlert error={promptId ? resolved.error : null} />
            {promptId ? (
              fields.length > 0 && (
                <fieldset className="stack" style={{ border: 0, padding: 0, margin: 0 }}>
                  <legend className="label" style={{ marginBottom: 6 }}>
                    Variables
                  </legend>
                  {fields.map((f) => (
                    <Field
                      key={f.name}
                      label={f.name}
                      hint={f.description || (f.defaultValue !== null ? `Default: ${f.defaultValue || "(empty)"}` : "Required")}
                    >
                      {({ id, describedBy }) => (
                        <textarea
                          id={id}
                          rows={2}
                          aria-describedby={describedBy}
                          aria-required={f.required}
                          value={values[f.name] ?? ""}
                          onChange={(e) => setValues({ ...values, [f.name]: e.target.value })}
                        />
                      )}
                    </Field>
                  ))}
                </fieldset>
              )
            ) : (
              <>
                <Field label="System prompt" hint="Optional">
                  {({ id, describedBy }) => (
                    <textarea id={id} rows={2} aria-describedby={describedBy} value={system} onChange={(e) => setSystem(e.target.value)} />
                  )}
                </Field>
                <Field label="Message">
                  {({ id }) => (
                    <textarea
                      id={id}
                      rows={5}
                      value={message}
                      placeholder="Ask anything…"
                      onChange={(e) => setMessage(e.target.value)}
                      onKeyDown={(e) => {
                        if (e.key === "Enter" && (e.metaKey || e.ctrlKey)) run();
                      }}
                    />
                  )}
                </Field>
              </>
            )}
            <Field label="Model" hint={promptId && !model ? "The version's model" : undefined}>
              {({ id, describedBy }) => (
                <select id={id} aria-describedby={describedBy} value={chosenModel} onChange={(e) => setModel(e.target.value)}>
                  <ModelOptions current={chosenModel} />
                </select>
              )}
            </Field>
            <div className="row">
              <Field label="Temperature">
                {({ id }) => (
                  <input id={id} type="number" min={0} max={2} step={0.1} style={{ width: 110 }} value={temperature} placeholder={String(version?.model?.temperature ?? "")} onChange={(e) => setTemperature(e.target.value)} />
                )}
              </Field>
              <Field label="Max tokens">
                {({ id }) => (
                  <input id={id} type="number" min={1} style={{ width: 110 }} value={maxTokens} placeholder={String(version?.model?.max_tokens ?? "")} onChange={(e) => setMaxTokens(e.target.value)} />
                )}
              </Field>
            </div>
            {promptId && missing.length > 0 && (
              <p className="small" style={{ color: "var(--warn)" }}>
                Still empty: {missing.join(", ")}.
              </p>
            )}
            <div className="row">
              <button type="submit" className="btn primary" disabled={running || (!promptId && !message.trim())}>
                <Icon name="play" /> Run
              </button>
              {running && (
                <button type="button" className="btn" onClick={stop}>
                  Stop
                </button>
              )}
              {!promptId && <span className="muted small">Ctrl+Enter in the message runs it</span>}
            </div>
          </div>
        </form>
        <div className="stack">
          {compare ? (
            <div className="stack">
              <div className="row" style={{ alignItems: "flex-end" }}>
                {variants.map((v, i) => (
                  <Field key={i} label={`Column ${i + 1}`}>
                    {({ id }) => (
                      <select id={id} value={v} onChange={(e) => setVariants(variants.map((x, j) => (j === i ? e.target.value : x)))}>
                        <optgroup label="Models">
                          {models.data?.map((m) => (
                            <option key={m.id} value={`model:${m.id}`}>
                              {m.id}
                            </option>
                          ))}
                        </optgroup>
                        {promptId && prompt.data && (
                          <optgroup label="Versions">
                            {Array.from({ length: prompt.data.latest_version }, (_, k) => prompt.data.latest_version - k).map((n) => (
                              <option key={n} value={`version:${n}`}>
                                v{n}
                              </option>
                            ))}
                          </optgroup>
                        )}
                      </select>
                    )}
                  </Field>
                ))}
                {variants.length < MAX_COLUMNS && (
                  <button type="button" className="btn small" onClick={() => setVariants([...variants, `model:${chosenModel}`])}>
                    Add column
                  </button>
                )}
                {variants.length > 2 && (
                  <button type="button" className="btn small ghost" onClick={() => setVariants(variants.slice(0, -1))}>
                    Remove column
                  </button>
                )}
              </div>
              <div className="columns" style={{ ["--cols" as string]: variants.length }}>
                {variants.map((v, i) => (
                  <RunOutput key={i} state={columns[i]?.state ?? single.state} name={`Result ${i + 1}: ${variantLabel(v)}`} heading={variantLabel(v)} />
                ))}
              </div>
            </div>
          ) : (
            <RunOutput state={single.state} name="Output" />
          )}
          <RunHistory promptId={promptId} onReopen={reopen} reopened={reopened} awaited={awaited} />
        </div>
      </div>
    </div>
  );
}

function RunHistory(props: { promptId: string; onReopen: (run: Run) => void; reopened: string | null; awaited: string[] }) {
  const now = useNow(30_000);
  const since = useRef(Date.now());
  const awaited = props.awaited.join(",");
  useEffect(() => {
    since.current = Date.now();
  }, [awaited]);
  const runs = useQuery({
    queryKey: ["runs", "playground", props.promptId],
    queryFn: () =>
      unwrap(api.GET("/api/v1/runs", { params: { query: { page_size: 50, prompt_id: props.promptId || undefined } } })),
    // Poll (for at most 10 s) until the runs finished here have arrived.
    refetchInterval: (query) => {
      const shown = new Set(query.state.data?.runs.map((r) => r.id));
      const missing = props.awaited.some((id) => !shown.has(id));
      return missing && Date.now() - since.current < 10_000 ? 400 : false;
    },
  });
  return (
    <section className="card history" aria-labelledby="history-title">
      <div className="card-head">
        <h2 id="history-title">{props.promptId ? "Last 50 runs of this prompt" : "Last 50 runs"}</h2>
        {runs.isFetching && <span className="spinner" aria-hidden="true" />}
      </div>
      <div className="card-body">
        <ErrorAlert error={runs.error} />
        {runs.data?.runs.length === 0 && <p className="muted small">No runs yet. Run something and it shows up here.</p>}
        <ul>
          {runs.data?.runs.map((r) => (
            <li key={r.id} aria-current={props.reopened === r.id ? "true" : undefined}>
              <div style={{ minWidth: 0 }}>
                <div className="small" style={{ overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" }}>
                  <span className={`badge ${r.status === "completed" ? "ok" : r.status === "failed" ? "bad" : ""}`}>{r.status}</span>{" "}
                  {r.model}
                  {r.prompt_id ? ` · v${r.prompt_version}` : ""} · {formatUsd(r.cost_usd)}
                </div>
                <div className="muted small" style={{ overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap", maxWidth: 480 }}>
                  {relativeTime(r.created_at, now)} · {r.output.slice(0, 120) || r.error}
                </div>
              </div>
              <button
                type="button"
                className="btn small"
                onClick={() => props.onReopen(r)}
                aria-label={`Reopen ${r.model} from ${relativeTime(r.created_at, now)}`}
              >
                Reopen
              </button>
            </li>
          ))}
        </ul>
      </div>
    </section>
  );
}

function SaveButton(props: {
  promptId: string;
  version: Schemas["VersionJson"] | undefined;
  model: string;
  chosenModel: string;
  temperature: string;
  maxTokens: string;
  system: string;
  message: string;
  disabled: boolean;
}) {
  const queryClient = useQueryClient();
  const [open, setOpen] = useState(false);
  const [name, setName] = useState("");
  const [folder, setFolder] = useState("");
  const [commit, setCommit] = useState("From the playground");
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState<{ id: string; version: number } | null>(null);
  const modelPatch = {
    ...(props.model ? { model: props.model } : {}),
    ...(props.temperature !== "" ? { temperature: Number(props.temperature) } : {}),
    ...(props.maxTokens !== "" ? { max_tokens: Number(props.maxTokens) } : {}),
  };
  const save = async () => {
    setError(null);
    try {
      if (props.promptId && props.version) {
        const draft = draftFromVersion(props.version);
        const created = await unwrap(
          api.POST("/api/v1/prompts/{prompt_id}/versions", {
            params: { path: { prompt_id: props.promptId } },
            body: { ...draftBody({ ...draft, model: { ...draft.model, ...modelPatch }, commitMessage: commit }) },
          }),
        );
        setSaved({ id: props.promptId, version: created.version.version ?? 0 });
      } else {
        const created = await unwrap(
          api.POST("/api/v1/prompts", {
            body: {
              name: name.trim(),
              folder: folder.trim(),
              messages: [...(props.system.trim() ? [{ role: "system", content: props.system }] : []), { role: "user", content: props.message }],
              model: { model: props.chosenModel, ...modelPatch },
              commit_message: commit,
            },
          }),
        );
        setSaved({ id: created.prompt.id, version: 1 });
      }
      void queryClient.invalidateQueries({ queryKey: ["prompts"] });
      void queryClient.invalidateQueries({ queryKey: ["prompt", props.promptId] });
    } catch (e) {
      setError(e);
    }
  };
  const forPrompt = Boolean(props.promptId);
  return (
    <>
      <button
        type="button"
        className="btn"
        disabled={props.disabled || (forPrompt ? !props.version : !props.message.trim())}
        onClick={() => {
          setSaved(null);
          setError(null);
          setOpen(true);
        }}
      >
        {forPrompt ? "Save as new version" : "Save as prompt"}
      </button>
      <Dialog
        open={open}
        title={forPrompt ? "Save as new version" : "Save as a new prompt"}
        onClose={() => setOpen(false)}
        footer={
          saved ? (
            <>
              <Link className="btn" to={`/prompts/${saved.id}?tab=history`} onClick={() => setOpen(false)}>
                Open prompt
              </Link>
              <button type="button" className="btn primary" onClick={() => setOpen(false)}>
                Done
              </button>
            </>
          ) : (
            <>
              <button type="button" className="btn" onClick={() => setOpen(false)}>
                Cancel
              </button>
              <button type="button" className="btn primary" disabled={!forPrompt && !name.trim()} onClick={() => void save()}>
                Save
              </button>
            </>
          )
        }
      >
        {saved ? (
          <div className="alert ok" role="status">
            Saved as version {saved.version}.
          </div>
        ) : (
          <>
            <p className="small muted">
              {forPrompt
                ? `A new version with v${props.version?.version}'s template and this model configuration${
                    Object.keys(modelPatch).length ? `: ${JSON.stringify(modelPatch)}` : " (unchanged)"
                  }.`
                : "A new prompt whose version 1 holds these messages and this model."}
            </p>
            {!forPrompt && (
              <div className="row">
                <div className="grow">
                  <Field label="Name">{({ id }) => <input id={id} value={name} onChange={(e) => setName(e.target.value)} />}</Field>
                </div>
                <div className="grow">
                  <Field label="Folder">{({ id }) => <input id={id} value={folder} onChange={(e) => setFolder(e.target.value)} />}</Field>
                </div>
              </div>
            )}
            <Field label="Commit message">{({ id }) => <input id={id} value={commit} onChange={(e) => setCommit(e.target.value)} />}</Field>
            <ErrorAlert error={error} />
          </>
        )}
      </Dialog>
    </>
  );
}
