/** Two versions side by side as the API's diff gives them: template lines, model and variable fields. */
import { Fragment, useState } from "react";
import { useQuery } from "@tanstack/react-query";
import { api, unwrap } from "../../api/client";
import { ErrorAlert, Field, Loading } from "../../components/ui";
import { diffRows, fieldValue, summarize } from "./diff";

export function DiffView(props: { promptId: string; latest: number; from: number; to: number; onChange: (from: number, to: number) => void }) {
  const { promptId, from, to } = props;
  const [expanded, setExpanded] = useState<Set<string>>(new Set());
  const diff = useQuery({
    queryKey: ["prompt", promptId, "diff", from, to],
    enabled: from > 0 && to > 0,
    queryFn: () =>
      unwrap(api.GET("/api/v1/prompts/{prompt_id}/diff", { params: { path: { prompt_id: promptId }, query: { from, to } } })),
  });
  const versions = Array.from({ length: props.latest }, (_, i) => props.latest - i);
  const rows = diff.data ? diffRows(diff.data.template, expanded.size > 0 ? Number.MAX_SAFE_INTEGER : 3) : [];
  const counts = diff.data ? summarize(diff.data.template) : null;

  return (
    <div className="stack">
      <div className="row">
        <Field label="From version">
          {({ id }) => (
            <select id={id} value={from} onChange={(e) => props.onChange(Number(e.target.value), to)}>
              {versions.map((v) => (
                <option key={v} value={v}>
                  v{v}
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="To version">
          {({ id }) => (
            <select id={id} value={to} onChange={(e) => props.onChange(from, Number(e.target.value))}>
              {versions.map((v) => (
                <option key={v} value={v}>
                  v{v}
                </option>
              ))}
            </select>
          )}
        </Field>
        {counts && (
          <p className="small muted" role="status" style={{ paddingBottom: 6 }}>
            <span style={{ color: "var(--ok)" }}>+{counts.inserted}</span>{" "}
            <span style={{ color: "var(--danger)" }}>−{counts.deleted}</span> template lines
            {diff.data && diff.data.model.length + diff.data.variables.length > 0
              ? `, ${diff.data.model.length + diff.data.variables.length} field changes`
              : ""}
          </p>
        )}
      </div>
      <ErrorAlert error={diff.error} title="Could not compare" />
      {diff.isLoading && <Loading label="Comparing…" />}
      {diff.data && (
        <>
          <section aria-labelledby="diff-template">
            <h2 id="diff-template" style={{ marginBottom: 8 }}>
              Template
            </h2>
            {counts && counts.inserted + counts.deleted === 0 ? (
              <p className="muted small">The templates are identical.</p>
            ) : (
              <div className="diff" role="table" aria-label={`Template changes from v${from} to v${to}`}>
                {rows.map((row, i) =>
                  row.kind === "fold" ? (
                    <div key={row.key} role="row" className="diff-line" style={{ background: "var(--surface-2)" }}>
                      <span role="cell" className="ln" />
                      <span role="cell" className="ln" />
                      <span role="cell" />
                      <span role="cell">
                        <button type="button" className="btn small ghost" onClick={() => setExpanded(new Set([row.key]))}>
                          Show {row.hidden} unchanged lines
                        </button>
                      </span>
                    </div>
                  ) : (
                    <div key={i} role="row" className={`diff-line ${row.op}`}>
                      <span role="cell" className="ln">
                        {row.oldLine ?? ""}
                      </span>
                      <span role="cell" className="ln">
                        {row.newLine ?? ""}
                      </span>
                      <span role="cell" className="sign" aria-label={row.op === "insert" ? "added" : row.op === "delete" ? "removed" : "unchanged"}>
                        {row.op === "insert" ? "+" : row.op === "delete" ? "−" : " "}
                      </span>
                      <span role="cell">{row.text || " "}</span>
                    </div>
                  ),
                )}
              </div>
            )}
          </section>
          {(["model", "variables"] as const).map((part) => (
            <section key={part} aria-labelledby={`diff-${part}`}>
              <h2 id={`diff-${part}`} style={{ marginBottom: 8 }}>
                {part === "model" ? "Model configuration" : "Variables"}
              </h2>
              {diff.data[part].length === 0 ? (
                <p className="muted small">No changes.</p>
              ) : (
                <table className="table card">
                  <thead>
                    <tr>
                      <th scope="col">Field</th>
                      <th scope="col">v{from}</th>
                      <th scope="col">v{to}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {diff.data[part].map((change) => (
                      <Fragment key={change.field}>
                        <tr>
                          <td className="mono">{change.field}</td>
                          <td className="mono" style={{ background: "var(--del)" }}>
                            {fieldValue(change.old)}
                          </td>
                          <td className="mono" style={{ background: "var(--ins)" }}>
                            {fieldValue(change.new)}
                          </td>
                        </tr>
                      </Fragment>
                    ))}
                  </tbody>
                </table>
              )}
            </section>
          ))}
        </>
      )}
    </div>
  );
}
