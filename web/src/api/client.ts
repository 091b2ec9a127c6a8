/**
 * The typed client of the gateway's public HTTP API, generated from its
 * OpenAPI description (`openapi.json`, checked in; `npm run gen:api` turns it
 * into `schema.d.ts`). Every call goes through `api`, which adds the access
 * token, refreshes it before it expires, and retries once after a 401.
 */
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";
import { ApiError, isProblem, networkProblem, type Problem } from "./problem";
import { SessionEndedError, SessionStore, type TokenResponse } from "../auth/session";

export type Schemas = components["schemas"];

/** Calls that need no credential (sign-up, sign-in, refresh). */
export const publicApi = createClient<paths>({ baseUrl: "" });

async function exchange(refreshToken: string): Promise<TokenResponse> {
  const result = await publicApi.POST("/api/v1/auth/refresh", { body: { refresh_token: refreshToken } });
  if (result.response.status === 401) {
    throw new SessionEndedError("Your session has ended (it expired or was signed out elsewhere). Sign in again.");
  }
  if (!result.data) throw new ApiError(problemOf(result.error, result.response));
  return result.data;
}

const storage: Storage | undefined = typeof localStorage === "undefined" ? undefined : localStorage;
const memory = new Map<string, string>();

export const sessions = new SessionStore(
  storage ?? {
    getItem: (k) => memory.get(k) ?? null,
    setItem: (k, v) => void memory.set(k, v),
    removeItem: (k) => void memory.delete(k),
  },
  exchange,
);

const retryable = new WeakMap<Request, Request>();

const authenticate: Middleware = {
  async onRequest({ request }) {
    const token = await sessions.accessToken().catch(() => null);
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    retryable.set(request, request.clone());
    return request;
  },
  async onResponse({ request, response }) {
    if (response.status !== 401) return response;
    const original = retryable.get(request);
    const seen = sessions.get()?.refreshToken;
    if (!original || !seen) return response;
    try {
      const refreshed = await sessions.refresh(seen, true);
      original.headers.set("Authorization", `Bearer ${refreshed.accessToken}`);
      return await fetch(original);
    } catch {
      return response;
    }
  },
};

export const api = createClient<paths>({ baseUrl: "" });
api.use(authenticate);

export function problemOf(error: unknown, response: Response): Problem {
  if (isProblem(error)) return error;
  return {
    type: "about:blank",
    title: response.statusText || "Error",
    status: response.status,
    detail: `The gateway answered ${response.status} ${response.statusText}.`,
  };
}

/** The data of a call, or an `ApiError` with the problem the gateway named. */
export async function unwrap<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  let result: { data?: T; error?: unknown; response: Response };
  try {
    result = await call;
  } catch (error) {
    throw new ApiError(networkProblem(error));
  }
  if (!result.response.ok) throw new ApiError(problemOf(result.error, result.response));
  return result.data as T;
}
