/** What the console needs to know of a template without asking the server. */

export interface VariableDoc {
  name: string;
  default?: string | null;
  description?: string;
}

export interface MessageDoc {
  role: string;
  content: string;
}

const VARIABLE = /(\\)?\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}/g;

/** The variables a text uses, in order of first use (escaped `\{{` skipped). */
export function templateVariables(...texts: string[]): string[] {
  const seen = new Set<string>();
  for (const text of texts) {
    for (const match of text.matchAll(VARIABLE)) {
      if (!match[1] && match[2]) seen.add(match[2]);
    }
  }
  return [...seen];
}

export interface VariableField {
  name: string;
  /** The declared default, if any: the field starts with it. */
  defaultValue: string | null;
  description: string;
  /** True when the template uses it and it has no default. */
  required: boolean;
}

/**
 * The form for a version's variables: the declared ones (in declared order)
 * and any the template uses without declaring.
 */
export function variableFields(declared: VariableDoc[], texts: string[]): VariableField[] {
  const used = templateVariables(...texts);
  const fields: VariableField[] = declared.map((v) => ({
    name: v.name,
    defaultValue: v.default ?? null,
    description: v.description ?? "",
    required: (v.default ?? null) === null,
  }));
  for (const name of used) {
    if (!fields.some((f) => f.name === name)) {
      fields.push({ name, defaultValue: null, description: "", required: true });
    }
  }
  return fields;
}

/** Starting values: defaults filled in, earlier input kept. */
export function initialValues(fields: VariableField[], previous: Record<string, string> = {}): Record<string, string> {
  const values: Record<string, string> = {};
  for (const field of fields) values[field.name] = previous[field.name] ?? field.defaultValue ?? "";
  return values;
}

/** The required variables still empty, by name. */
export function missingVariables(fields: VariableField[], values: Record<string, string>): string[] {
  return fields.filter((f) => f.required && !(values[f.name] ?? "").length).map((f) => f.name);
}

/**
 * What to send: what was typed. A default left as it is goes unsent (the
 * server applies the version's own default), and so does an empty required
 * variable, so the server names it as missing. A default cleared on purpose
 * is sent as the empty string.
 */
export function variablesToSend(fields: VariableField[], values: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const field of fields) {
    const value = values[field.name] ?? "";
    if (field.defaultValue !== null && value === field.defaultValue) continue;
    if (value === "" && field.defaultValue === null) continue;
    out[field.name] = value;
  }
  return out;
}
