/** A run's streamed answer and, once it is recorded, its tokens, cost and timings. */
import { ErrorAlert, formatMicros, formatUsd } from "../../components/ui";
import type { RunState } from "./stream";

export function RunOutput(props: { state: RunState; name: string; heading?: string }) {
  const { state } = props;
  const { run } = state;
  const running = state.status === "running";
  const recorded = run && (run.status === "completed" || run.status === "failed" || run.status === "cancelled");
  return (
    <section className="card" role="region" aria-label={props.name} aria-busy={running}>
      {props.heading && (
        <div className="card-head">
          <h3>{props.heading}</h3>
          {running && <span className="spinner" aria-hidden="true" />}
        </div>
      )}
      <div
        className={`output${state.text || running ? "" : " placeholder"}${running ? " caret" : ""}`}
        data-testid="output-text"
        aria-live={running ? "off" : "polite"}
      >
        {state.text || (running ? "" : state.status === "idle" ? "Run to see the answer here." : "")}
      </div>
      <ErrorAlert error={state.error} />
      {(recorded || running) && (
        <div className="stats" aria-label="Run details">
          {recorded ? (
            <>
              <span>
                Tokens <b>{run.usage.input_tokens}</b> in · <b>{run.usage.output_tokens}</b> out
                {run.usage.estimated ? " (estimated)" : ""}
              </span>
              <span>
                Cost <b>{formatUsd(run.cost_usd)}</b>
              </span>
              <span>
                Latency <b>{formatMicros(run.latency_us)}</b>
              </span>
              <span>
                First token <b>{run.time_to_first_token_us ? formatMicros(run.time_to_first_token_us) : "—"}</b>
              </span>
              <span>{run.model}</span>
            </>
          ) : (
            <span>
              Streaming…{state.firstTokenMs !== null ? ` first token after ${Math.round(state.firstTokenMs)} ms` : ""}
            </span>
          )}
        </div>
      )}
    </section>
  );
}
