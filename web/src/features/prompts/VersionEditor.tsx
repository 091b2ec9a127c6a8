/**
 * The editor of a version's content: a text template or chat messages in
 * Monaco, the model configuration, declared variables, a commit message. The
 * API's validation problems appear in the editor at their line and column.
 */
import { lazy, Suspense, useState, type ReactNode } from "react";
import { ApiError, type Problem, type SourcePosition } from "../../api/problem";
import { Field } from "../../components/ui";
import { ModelOptions, useModels } from "../models";
import { problemsByEditor, undeclared, type Draft } from "./draft";

const MonacoEditor = lazy(() => import("./MonacoEditor"));

function TemplateEditor(props: {
  label: string;
  value: string;
  onChange: (v: string) => void;
  problems?: SourcePosition[];
  minLines?: number;
}) {
  const [reveal, setReveal] = useState<{ line: number; column: number; at: number } | null>(null);
  const invalid = Boolean(props.problems?.length);
  return (
    <div className="stack" style={{ gap: 6 }}>
      <div className={`editor-frame${invalid ? " invalid" : ""}`}>
        <Suspense
          fallback={
            <textarea
              className="editor-fallback"
              aria-label={props.label}
              value={props.value}
              onChange={(e) => props.onChange(e.target.value)}
              rows={props.minLines ?? 6}
            />
          }
        >
          <MonacoEditor
            label={props.label}
            value={props.value}
            onChange={props.onChange}
            problems={props.problems}
            minLines={props.minLines}
            reveal={reveal}
          />
        </Suspense>
      </div>
      {invalid && (
        <ul className="problems" aria-label={`Problems in ${props.label}`}>
          {props.problems?.map((p, i) => (
            <li key={i}>
              <button type="button" onClick={() => setReveal({ line: p.line, column: p.column, at: Date.now() })}>
                Line {p.line}, column {p.column}
              </button>
              : {p.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** True when the API's problems are all shown in the editor (no banner needed). */
export function shownInline(error: unknown): boolean {
  if (!(error instanceof ApiError)) return false;
  const inline = Object.values(problemsByEditor(error.problem)).flat().length;
  return inline > 0 && inline === (error.problem.errors?.length ?? 0);
}

export function VersionEditor(props: {
  draft: Draft;
  onChange: (draft: Draft) => void;
  problem: Problem | null;
  /** Name, folder and such, above the template (new prompts). */
  header?: ReactNode;
  footer: ReactNode;
}) {
  const { draft, onChange } = props;
  const models = useModels();
  const problems = problemsByEditor(props.problem);
  const set = (patch: Partial<Draft>) => onChange({ ...draft, ...patch });
  const setModel = (patch: Partial<Draft["model"]>) => set({ model: { ...draft.model, ...patch } });
  const number = (text: string) => (text.trim() === "" ? null : Number(text));
  const missing = undeclared(draft);
  const modelKnown = !draft.model.model || models.data?.some((m) => m.id === draft.model.model);

  return (
    <div className="editor-grid">
      <div className="stack">
        {props.header}
        <fieldset className="row" style={{ border: 0, padding: 0, margin: 0, gap: 16 }}>
          <legend className="label" style={{ marginBottom: 4 }}>
            Template type
          </legend>
          <label className="row small" style={{ gap: 6 }}>
            <input type="radio" name="kind" checked={draft.kind === "chat"} onChange={() => set({ kind: "chat" })} /> Chat messages
          </label>
          <label className="row small" style={{ gap: 6 }}>
            <input type="radio" name="kind" checked={draft.kind === "text"} onChange={() => set({ kind: "text" })} /> Text
          </label>
        </fieldset>
        {draft.kind === "text" ? (
          <TemplateEditor
            label="Template"
            value={draft.template}
            onChange={(template) => set({ template })}
            problems={problems.template}
            minLines={10}
          />
        ) : (
          <div className="stack">
            {draft.messages.map((message, i) => (
              <div className="message-block" key={i}>
                <div className="row" style={{ justifyContent: "space-between", alignItems: "center" }}>
                  <label className="row small" style={{ gap: 6, alignItems: "center" }}>
                    <span className="label">Role of message {i + 1}</span>
                    <select
                      value={message.role}
                      onChange={(e) =>
                        set({ messages: draft.messages.map((m, j) => (j === i ? { ...m, role: e.target.value } : m)) })
                      }
                    >
                      <option value="system">system</option>
                      <option value="user">user</option>
                      <option value="assistant">assistant</option>
                    </select>
                  </label>
                  <button
                    type="button"
                    className="btn small ghost"
                    aria-label={`Remove message ${i + 1}`}
                    disabled={draft.messages.length === 1}
                    onClick={() => set({ messages: draft.messages.filter((_, j) => j !== i) })}
                  >
                    Remove
                  </button>
                </div>
                <TemplateEditor
                  label={`Message ${i + 1} (${message.role})`}
                  value={message.content}
                  onChange={(content) =>
                    set({ messages: draft.messages.map((m, j) => (j === i ? { ...m, content } : m)) })
                  }
                  problems={problems[`messages[${i}]`]}
                  minLines={3}
                />
              </div>
            ))}
            <div>
              <button
                type="button"
                className="btn small"
                onClick={() => {
                  const last = draft.messages.at(-1)?.role;
                  set({ messages: [...draft.messages, { role: last === "user" ? "assistant" : "user", content: "" }] });
                }}
              >
                Add message
              </button>
            </div>
          </div>
        )}
      </div>
      <div className="stack">
        <div className="card">
          <div className="card-head">
            <h2>Model</h2>
          </div>
          <div className="card-body stack">
            <Field label="Model" error={modelKnown ? undefined : "Not in your org's catalog"}>
              {({ id, describedBy, invalid }) => (
                <select
                  id={id}
                  aria-describedby={describedBy}
                  aria-invalid={invalid}
                  value={draft.model.model ?? ""}
                  onChange={(e) => setModel({ model: e.target.value })}
                >
                  <option value="">(choose when running)</option>
                  <ModelOptions current={draft.model.model} />
                </select>
              )}
            </Field>
            <div className="row">
              <Field label="Temperature">
                {({ id }) => (
                  <input
                    id={id}
                    type="number"
                    min={0}
                    max={2}
                    step={0.1}
                    style={{ width: 110 }}
                    value={draft.model.temperature ?? ""}
                    onChange={(e) => setModel({ temperature: number(e.target.value) })}
                  />
                )}
              </Field>
              <Field label="Max tokens">
                {({ id }) => (
                  <input
                    id={id}
                    type="number"
                    min={1}
                    step={1}
                    style={{ width: 110 }}
                    value={draft.model.max_tokens ?? ""}
                    onChange={(e) => setModel({ max_tokens: number(e.target.value) })}
                  />
                )}
              </Field>
            </div>
          </div>
        </div>
        <div className="card">
          <div className="card-head">
            <h2>Variables</h2>
            {missing.length > 0 && (
              <button
                type="button"
                className="btn small"
                onClick={() => set({ variables: [...draft.variables, ...missing.map((name) => ({ name }))] })}
              >
                Declare {missing.length} used
              </button>
            )}
          </div>
          <div className="card-body stack">
            {draft.variables.length === 0 && (
              <p className="muted small">
                None declared: every <code>{"{{variable}}"}</code> the template uses is required when it runs.
              </p>
            )}
            {draft.variables.map((variable, i) => (
              <div key={i} className="variable-row">
                <Field label="Name">
                  {({ id }) => (
                    <input
                      id={id}
                      aria-label={`Variable ${i + 1} name`}
                      value={variable.name}
                      onChange={(e) =>
                        set({ variables: draft.variables.map((v, j) => (j === i ? { ...v, name: e.target.value } : v)) })
                      }
                    />
                  )}
                </Field>
                <Field label="Default">
                  {({ id }) => (
                    <input
                      id={id}
                      aria-label={`Default of ${variable.name || `variable ${i + 1}`}`}
                      placeholder="(required)"
                      value={variable.default ?? ""}
                      onChange={(e) =>
                        set({
                          variables: draft.variables.map((v, j) =>
                            j === i ? { ...v, default: e.target.value === "" ? null : e.target.value } : v,
                          ),
                        })
                      }
                    />
                  )}
                </Field>
                <button
                  type="button"
                  className="btn small ghost"
                  aria-label={`Remove variable ${variable.name || i + 1}`}
                  onClick={() => set({ variables: draft.variables.filter((_, j) => j !== i) })}
                >
                  ✕
                </button>
              </div>
            ))}
            {missing.length > 0 && draft.variables.length > 0 && (
              <p className="small" role="status" style={{ color: "var(--warn)" }}>
                Used but not declared: {missing.join(", ")}. Saving will refuse undeclared variables.
              </p>
            )}
            <div>
              <button type="button" className="btn small" onClick={() => set({ variables: [...draft.variables, { name: "" }] })}>
                Add variable
              </button>
            </div>
          </div>
        </div>
        <div className="card">
          <div className="card-body stack">
            <Field label="Commit message" hint="Why this version: shown in the history.">
              {({ id, describedBy }) => (
                <input
                  id={id}
                  aria-describedby={describedBy}
                  value={draft.commitMessage}
                  onChange={(e) => set({ commitMessage: e.target.value })}
                />
              )}
            </Field>
            {props.footer}
          </div>
        </div>
      </div>
    </div>
  );
}
