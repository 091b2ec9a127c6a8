/** Problem JSON (RFC 9457) as the gateway answers every error. */
export interface FieldViolation {
  field: string;
  description: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: FieldViolation[];
  /** The budget that refused a run (402 / 429). */
  budget?: string;
}

export function isProblem(value: unknown): value is Problem {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as Problem).status === "number" &&
    typeof (value as Problem).detail === "string"
  );
}

/** An API call that failed: the problem the gateway named, or a network failure. */
export class ApiError extends Error {
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(problem.detail || problem.title);
    this.name = "ApiError";
    this.problem = problem;
  }

  get status(): number {
    return this.problem.status;
  }

  /** The violation for one field (exact path or a path below it). */
  fieldError(field: string): string | undefined {
    return this.problem.errors?.find((e) => e.field === field || e.field.startsWith(`${field}.`) || e.field.startsWith(`${field}[`))
      ?.description;
  }
}

export function networkProblem(reason: unknown): Problem {
  return {
    type: "urn:promptops:problem:network",
    title: "Network error",
    status: 0,
    detail: `The gateway could not be reached (${reason instanceof Error ? reason.message : String(reason)}). Check that promptops is running, then try again.`,
  };
}

/** A sentence for a person: what went wrong and, where we know it, what to do. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    const { problem } = error;
    const fields = problem.errors?.length
      ? ` ${problem.errors.map((e) => `${e.field}: ${e.description}`).join("; ")}.`
      : "";
    const hint = HINTS[problem.status] ?? "";
    return `${problem.detail || problem.title}${fields.endsWith("..") ? fields.slice(0, -1) : fields}${hint}`;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

const HINTS: Record<number, string> = {
  402: " Raise the budget in Billing or wait for it to reset.",
  403: " Ask an owner or admin of this org for the permission.",
  429: " Wait a moment and try again.",
  503: " The service or provider is unavailable; try again shortly.",
};

/** Where a template problem is: `line:column` parsed from a violation's text. */
export interface SourcePosition {
  line: number;
  column: number;
  message: string;
}

/**
 * Where a template problem is: the prompts service starts each one with its
 * 1-based position, e.g. `3:14: unclosed {{ …`.
 */
export function sourcePosition(description: string): SourcePosition | null {
  const match = /^(\d+):(\d+):?\s*(.*)$/.exec(description);
  if (!match) return null;
  return { line: Number(match[1]), column: Number(match[2]), message: match[3] || description };
}
