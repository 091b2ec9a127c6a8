/** The URL is the state: query parameters changed without losing the others. */

/**
 * A copy of `params` with `changes` applied: a string sets the parameter
 * (the empty string too), `null` or `undefined` removes it.
 */
export function withChanges(
  params: URLSearchParams,
  changes: Record<string, string | null | undefined>,
): URLSearchParams {
  const next = new URLSearchParams(params);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined) next.delete(key);
    else next.set(key, value);
  }
  return next;
}
