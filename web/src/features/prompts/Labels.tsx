/** A prompt's labels: move one to any version (promote), or roll it back, each with a reason. */
import { useState } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "../../api/client";
import { useAuth } from "../../auth/AuthContext";
import { Dialog, ErrorAlert, Field } from "../../components/ui";
import { useLabelPolicy, type Prompt } from "./api";

interface Move {
  label: string;
  version: number;
  reason: string;
  rollback: boolean;
}

export function Labels({ prompt }: { prompt: Prompt }) {
  const { can } = useAuth();
  const policy = useLabelPolicy();
  const queryClient = useQueryClient();
  const [move, setMove] = useState<Move | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const protectedLabels = new Set(policy.data?.protected_labels ?? []);
  const mayMove = (label: string) =>
    protectedLabels.has(label) ? can("labels:move-protected") : can("labels:move");
  const labels = Object.entries(prompt.labels).sort(([a], [b]) => a.localeCompare(b));
  const versions = Array.from({ length: prompt.latest_version }, (_, i) => prompt.latest_version - i);

  const submit = async () => {
    if (!move) return;
    setBusy(true);
    setError(null);
    try {
      await unwrap(
        api.PUT("/api/v1/prompts/{prompt_id}/labels/{label}", {
          params: { path: { prompt_id: prompt.id, label: move.label.trim() } },
          body: { version: move.version, reason: move.reason },
        }),
      );
      setMove(null);
      await queryClient.invalidateQueries({ queryKey: ["prompt", prompt.id] });
      void queryClient.invalidateQueries({ queryKey: ["prompts"] });
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const open = (m: Move) => {
    setError(null);
    setMove(m);
  };

  return (
    <section className="card" aria-labelledby="labels-title">
      <div className="card-head">
        <h2 id="labels-title">Labels</h2>
        <button
          type="button"
          className="btn small"
          disabled={!can("labels:move")}
          title={can("labels:move") ? undefined : "Your role cannot move labels"}
          onClick={() => open({ label: "production", version: prompt.latest_version, reason: "", rollback: false })}
        >
          Move label
        </button>
      </div>
      <div className="card-body">
        {labels.length === 0 ? (
          <p className="muted small">
            No labels yet. Point <code>production</code> at a version so services fetch it by label.
          </p>
        ) : (
          <ul style={{ listStyle: "none", margin: 0, padding: 0 }}>
              {labels.map(([label, version]) => (
                <li key={label} className="label-row">
                  <span className="row" style={{ gap: 6, alignItems: "center" }}>
                    <span className="badge label">{label}</span>
                    <span>→ v{version}</span>
                    {protectedLabels.has(label) && <span className="badge protected">protected</span>}
                  </span>
                  <span className="actions">
                    <button
                      type="button"
                      className="btn small"
                      aria-label={`Move ${label}`}
                      disabled={!mayMove(label)}
                      title={mayMove(label) ? undefined : "Only owners and admins move protected labels"}
                      onClick={() => open({ label, version: prompt.latest_version, reason: "", rollback: false })}
                    >
                      Move
                    </button>
                    <button
                      type="button"
                      className="btn small"
                      aria-label={`Roll back ${label}`}
                      disabled={!mayMove(label) || version <= 1}
                      title={mayMove(label) ? undefined : "Only owners and admins move protected labels"}
                      onClick={() => open({ label, version: version - 1, reason: "", rollback: true })}
                    >
                      Roll back
                    </button>
                  </span>
                </li>
              ))}
          </ul>
        )}
        {!policy.isLoading && protectedLabels.size > 0 && (
          <p className="muted small" style={{ marginTop: 8 }}>
            Protected: {[...protectedLabels].join(", ")} — moved only by owners and admins.
          </p>
        )}
      </div>
      <Dialog
        open={move !== null}
        title={move?.rollback ? `Roll back ${move.label}` : "Move label"}
        onClose={() => setMove(null)}
        footer={
          <>
            <button type="button" className="btn" onClick={() => setMove(null)}>
              Cancel
            </button>
            <button type="button" className="btn primary" disabled={busy || !move?.label.trim()} onClick={() => void submit()}>
              {move?.rollback ? "Roll back" : "Move label"}
            </button>
          </>
        }
      >
        {move && (
          <>
            {move.rollback ? (
              <p className="small">
                <strong>{move.label}</strong> points at v{prompt.labels[move.label]}. Choose the version to go back to;
                every client watching the label gets it at once.
              </p>
            ) : (
              <Field label="Label" hint="An existing label or a new name.">
                {({ id, describedBy }) => (
                  <>
                    <input
                      id={id}
                      list="label-names"
                      aria-describedby={describedBy}
                      value={move.label}
                      onChange={(e) => setMove({ ...move, label: e.target.value })}
                    />
                    <datalist id="label-names">
                      {[...new Set(["production", "staging", ...labels.map(([l]) => l)])].map((l) => (
                        <option key={l} value={l} />
                      ))}
                    </datalist>
                  </>
                )}
              </Field>
            )}
            <Field label="Version">
              {({ id }) => (
                <select id={id} value={move.version} onChange={(e) => setMove({ ...move, version: Number(e.target.value) })}>
                  {versions.map((v) => (
                    <option key={v} value={v}>
                      v{v}
                      {prompt.labels[move.label] === v ? " (current)" : ""}
                    </option>
                  ))}
                </select>
              )}
            </Field>
            <Field label="Reason" hint="Recorded in the audit trail.">
              {({ id, describedBy }) => (
                <input
                  id={id}
                  aria-describedby={describedBy}
                  value={move.reason}
                  onChange={(e) => setMove({ ...move, reason: e.target.value })}
                  placeholder={move.rollback ? "e.g. v3 raised complaint rate" : "e.g. passed evaluation"}
                />
              )}
            </Field>
            <ErrorAlert error={error} />
          </>
        )}
      </Dialog>
    </section>
  );
}
