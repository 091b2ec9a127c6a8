/**
 * One streamed run: `started` (the run), `delta`s of text, `completed` (the
 * recorded run with tokens and cost) or `error` (problem JSON). Shared by the
 * playground's columns and by chat.
 */
import { useCallback, useRef, useState } from "react";
import { api, problemOf, type Schemas } from "../../api/client";
import { ApiError, isProblem, networkProblem } from "../../api/problem";
import { readSse } from "../../api/sse";

export type Run = Schemas["RunJson"];
export type ExecuteBody = Schemas["ExecuteBody"];
export type MessageBody = Schemas["MessageBody"];

export interface RunState {
  status: "idle" | "running" | "done" | "failed" | "stopped";
  text: string;
  run: Run | null;
  error: unknown;
  /** Milliseconds from Run to the first token, as the browser saw it. */
  firstTokenMs: number | null;
  totalMs: number | null;
}

export const idle: RunState = { status: "idle", text: "", run: null, error: null, firstTokenMs: null, totalMs: null };

type Start =
  | { kind: "execute"; body: ExecuteBody }
  | { kind: "message"; conversationId: string; body: MessageBody };

async function open(start: Start, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
  const result =
    start.kind === "execute"
      ? await api.POST("/api/v1/executions", { body: { ...start.body, stream: true }, parseAs: "stream", signal })
      : await api.POST("/api/v1/conversations/{id}/messages", {
          params: { path: { id: start.conversationId } },
          body: { ...start.body, stream: true },
          parseAs: "stream",
          signal,
        });
  if (!result.response.ok || !result.data) {
    // openapi-fetch has already read an error's body into `error`.
    throw new ApiError(problemOf(result.error, result.response));
  }
  return result.data as unknown as ReadableStream<Uint8Array>;
}

export function useRunStream(onDone?: (run: Run | null) => void) {
  const [state, setState] = useState<RunState>(idle);
  const controller = useRef<AbortController | null>(null);
  const done = useRef(onDone);
  done.current = onDone;

  const start = useCallback(async (what: Start) => {
    controller.current?.abort();
    const abort = new AbortController();
    controller.current = abort;
    const began = performance.now();
    let firstTokenMs: number | null = null;
    let text = "";
    setState({ ...idle, status: "running" });
    try {
      const body = await open(what, abort.signal);
      for await (const event of readSse(body)) {
        if (event.event === "started") {
          const run = JSON.parse(event.data) as Run;
          setState((s) => ({ ...s, run }));
        } else if (event.event === "delta") {
          const { text: piece } = JSON.parse(event.data) as { text: string };
          if (firstTokenMs === null) {
            firstTokenMs = performance.now() - began;
            performance.mark("promptops:first-delta");
          }
          text += piece;
          const snapshot = text;
          const first = firstTokenMs;
          setState((s) => ({ ...s, text: snapshot, firstTokenMs: first }));
        } else if (event.event === "completed") {
          const run = JSON.parse(event.data) as Run;
          const failed = run.status === "failed";
          performance.mark("promptops:completed");
          setState((s) => ({
            ...s,
            run,
            text: run.output || s.text,
            status: failed ? "failed" : "done",
            error: failed ? new ApiError({ type: "urn:promptops:problem:run-failed", title: "Run failed", status: 503, detail: run.error }) : null,
            totalMs: performance.now() - began,
          }));
          done.current?.(run);
        } else if (event.event === "error") {
          const problem: unknown = JSON.parse(event.data || "null");
          throw new ApiError(
            isProblem(problem) ? problem : { type: "about:blank", title: "Error", status: 500, detail: "The run failed." },
          );
        }
      }
      setState((s) => (s.status === "running" ? { ...s, status: "done", totalMs: performance.now() - began } : s));
    } catch (error) {
      if (abort.signal.aborted) {
        setState((s) => ({ ...s, status: "stopped" }));
        return;
      }
      setState((s) => ({
        ...s,
        status: "failed",
        error: error instanceof ApiError ? error : new ApiError(networkProblem(error)),
      }));
      done.current?.(null);
    }
  }, []);

  const stop = useCallback(() => controller.current?.abort(), []);
  const reset = useCallback((next: Partial<RunState> = {}) => setState({ ...idle, ...next }), []);
  return { state, start, stop, reset };
}
