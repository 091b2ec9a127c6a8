/** An unsaved version as the editor holds it, and its conversion to and from the API. */
import type { Schemas } from "../../api/client";
import { sourcePosition, type Problem, type SourcePosition } from "../../api/problem";
import { templateVariables, type MessageDoc, type VariableDoc } from "./template";

export type ModelDoc = Schemas["ModelDoc"];

export interface Draft {
  kind: "text" | "chat";
  template: string;
  messages: MessageDoc[];
  model: ModelDoc;
  variables: VariableDoc[];
  commitMessage: string;
}

export function emptyDraft(): Draft {
  return {
    kind: "chat",
    template: "",
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: "" },
    ],
    model: { model: "mock/echo" },
    variables: [],
    commitMessage: "",
  };
}

export function draftFromVersion(version: Schemas["VersionJson"]): Draft {
  const messages = version.messages ?? null;
  return {
    kind: messages ? "chat" : "text",
    template: version.template ?? "",
    messages: messages ?? [{ role: "user", content: version.template ?? "" }],
    model: { ...(version.model ?? {}) },
    variables: (version.variables ?? []).map((v) => ({ ...v })),
    commitMessage: "",
  };
}

/** Every text of the draft that may hold `{{variables}}`. */
export function draftTexts(draft: Draft): string[] {
  return draft.kind === "text" ? [draft.template] : draft.messages.map((m) => m.content);
}

/** Variables the template uses but the draft does not declare. */
export function undeclared(draft: Draft): string[] {
  const declared = new Set(draft.variables.map((v) => v.name));
  return templateVariables(...draftTexts(draft)).filter((name) => !declared.has(name));
}

/** The model configuration without empty fields (the API rejects none, but diffs stay clean). */
function cleanModel(model: ModelDoc): ModelDoc {
  const out: ModelDoc = {};
  if (model.model) out.model = model.model;
  for (const key of ["temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty"] as const) {
    const value = model[key];
    if (value !== null && value !== undefined && !Number.isNaN(value)) out[key] = value;
  }
  if (model.stop?.length) out.stop = model.stop;
  if (model.fallback_models?.length) out.fallback_models = model.fallback_models;
  return out;
}

export function draftBody(draft: Draft) {
  return {
    ...(draft.kind === "text" ? { template: draft.template } : { messages: draft.messages }),
    model: cleanModel(draft.model),
    variables: draft.variables
      .filter((v) => v.name.trim())
      .map((v) => ({
        name: v.name.trim(),
        ...(v.default !== null && v.default !== undefined ? { default: v.default } : {}),
        ...(v.description ? { description: v.description } : {}),
      })),
    commit_message: draft.commitMessage,
  };
}

/** The API's template problems, per editor: key `template` or `messages[i]`. */
export function problemsByEditor(problem: Problem | null): Record<string, SourcePosition[]> {
  const out: Record<string, SourcePosition[]> = {};
  if (!problem) return out;
  for (const violation of problem.errors ?? []) {
    const message = /messages\[(\d+)\]\.content$/.exec(violation.field);
    const key = message ? `messages[${message[1]}]` : violation.field.endsWith("template") ? "template" : null;
    if (!key) continue;
    const position = sourcePosition(violation.description);
    if (position) (out[key] ??= []).push(position);
  }
  return out;
}
