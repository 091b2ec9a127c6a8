/** Import a JSON or YAML document (planned first, then applied) and export one. */
import { useState } from "react";
import { api, unwrap, type Schemas } from "../../api/client";
import { Dialog, ErrorAlert, Field } from "../../components/ui";

type Format = "json" | "yaml";

function contentType(name: string, text: string): string {
  if (/\.ya?ml$/i.test(name)) return "application/yaml";
  if (/\.json$/i.test(name)) return "application/json";
  return text.trimStart().startsWith("{") ? "application/json" : "application/yaml";
}

async function importDocument(text: string, type: string, dryRun: boolean) {
  return unwrap(
    api.POST("/api/v1/prompts/import", {
      params: { query: { dry_run: dryRun } },
      body: text,
      bodySerializer: (body: unknown) => body as string,
      headers: { "Content-Type": type },
    }),
  );
}

export function ImportDialog(props: { open: boolean; onClose: () => void; onImported: (position: string) => void }) {
  const [file, setFile] = useState<{ name: string; text: string } | null>(null);
  const [plan, setPlan] = useState<Schemas["ImportResultJson"] | null>(null);
  const [done, setDone] = useState<Schemas["ImportResultJson"] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const close = () => {
    setFile(null);
    setPlan(null);
    setDone(null);
    setError(null);
    props.onClose();
  };
  const run = async (dryRun: boolean) => {
    if (!file) return;
    setBusy(true);
    setError(null);
    try {
      const result = await importDocument(file.text, contentType(file.name, file.text), dryRun);
      if (dryRun) setPlan(result);
      else {
        setDone(result);
        props.onImported(result.position);
      }
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const changes = (plan?.actions ?? []).filter((a) => a.action !== "unchanged");
  return (
    <Dialog
      open={props.open}
      title="Import prompts"
      onClose={close}
      footer={
        done ? (
          <button type="button" className="btn primary" onClick={close}>
            Done
          </button>
        ) : (
          <>
            <button type="button" className="btn" onClick={close}>
              Cancel
            </button>
            {plan ? (
              <button type="button" className="btn primary" disabled={busy || changes.length === 0} onClick={() => void run(false)}>
                Apply {changes.length} change{changes.length === 1 ? "" : "s"}
              </button>
            ) : (
              <button type="button" className="btn primary" disabled={busy || !file} onClick={() => void run(true)}>
                Check file
              </button>
            )}
          </>
        )
      }
    >
      <p className="muted small">
        A <code>promptops.prompts/v1</code> document, as Export writes it. The whole file is checked before anything is
        written.
      </p>
      <Field label="Prompt file (JSON or YAML)">
        {({ id }) => (
          <input
            id={id}
            type="file"
            accept=".json,.yaml,.yml,application/json,application/yaml"
            onChange={async (e) => {
              const chosen = e.target.files?.[0];
              setPlan(null);
              setDone(null);
              setError(null);
              setFile(chosen ? { name: chosen.name, text: await chosen.text() } : null);
            }}
          />
        )}
      </Field>
      <ErrorAlert error={error} title="The file was not imported" />
      {(done ?? plan) && (
        <div role="status">
          <p className="small">
            {done ? "Imported:" : "This file will:"}{" "}
            {(done ?? plan)?.actions.length === 0 && "change nothing."}
          </p>
          <ul className="small">
            {(done ?? plan)?.actions.map((a, i) => (
              <li key={i}>
                <strong>{a.action}</strong> {a.folder ? `${a.folder}/` : ""}
                {a.name}
                {a.detail ? ` — ${a.detail}` : ""}
              </li>
            ))}
          </ul>
        </div>
      )}
    </Dialog>
  );
}

/** Downloads one prompt or a folder (the whole org when neither is given). */
export async function exportPrompts(scope: { promptId?: string; folder?: string }, format: Format): Promise<void> {
  const text = await unwrap(
    api.GET("/api/v1/prompts/export", {
      params: { query: { prompt_id: scope.promptId, folder: scope.folder || undefined, format } },
      parseAs: "text",
    }),
  );
  const blob = new Blob([text as unknown as string], { type: format === "yaml" ? "application/yaml" : "application/json" });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = `prompts${scope.folder ? `-${scope.folder.replaceAll("/", "-")}` : ""}.${format}`;
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 1000);
}
