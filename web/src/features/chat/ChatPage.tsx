/** Multi-turn conversations; the model can change mid-thread and each answer says which model gave it. */
import { useEffect, useRef, useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "../../api/client";
import { useNow } from "../../auth/AuthContext";
import { EmptyState, ErrorAlert, Field, Icon, Loading, formatUsd, relativeTime } from "../../components/ui";
import { ModelOptions, useModels } from "../models";
import { useRunStream } from "../playground/stream";

export default function ChatPage() {
  const { conversationId = "" } = useParams();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const models = useModels();
  const now = useNow(30_000);
  const list = useQuery({
    queryKey: ["conversations"],
    queryFn: () => unwrap(api.GET("/api/v1/conversations", { params: { query: { page_size: 50 } } })),
  });
  const conversation = useQuery({
    queryKey: ["conversation", conversationId],
    enabled: Boolean(conversationId),
    queryFn: () => unwrap(api.GET("/api/v1/conversations/{id}", { params: { path: { id: conversationId } } })),
  });
  const [model, setModel] = useState("");
  const [content, setContent] = useState("");
  const [pending, setPending] = useState<{ content: string; model: string } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const stream = useRunStream(() => {
    void queryClient.invalidateQueries({ queryKey: ["conversation", conversationId] }).then(() => setPending(null));
    void queryClient.invalidateQueries({ queryKey: ["conversations"] });
  });
  const thread = useRef<HTMLDivElement>(null);
  const current = conversation.data;
  const chosenModel = model || current?.model || models.data?.[0]?.id || "mock/echo";

  useEffect(() => {
    thread.current?.scrollTo({ top: thread.current.scrollHeight });
  }, [current?.turns.length, stream.state.text]);

  const send = async (event?: FormEvent) => {
    event?.preventDefault();
    const text = content.trim();
    if (!text) return;
    setError(null);
    let id = conversationId;
    try {
      if (!id) {
        const created = await unwrap(
          api.POST("/api/v1/conversations", { body: { model: chosenModel, title: text.slice(0, 80) } }),
        );
        id = created.id;
        await queryClient.invalidateQueries({ queryKey: ["conversations"] });
        navigate(`/chat/${id}`);
      }
      setContent("");
      setPending({ content: text, model: chosenModel });
      void stream.start({
        kind: "message",
        conversationId: id,
        body: { content: text, model: chosenModel !== current?.model ? chosenModel : undefined },
      });
    } catch (e) {
      setError(e);
    }
  };

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Chat</h1>
          <p className="sub">Conversations keep their context; switch the model at any turn.</p>
        </div>
        <Link className="btn" to="/chat" onClick={() => stream.reset()}>
          <Icon name="plus" /> New conversation
        </Link>
      </div>
      <div className="chat">
        <nav className="card" aria-label="Conversations">
          <div className="card-head">
            <h2>Conversations</h2>
          </div>
          {list.isLoading && (
            <div className="card-body">
              <Loading />
            </div>
          )}
          <ErrorAlert error={list.error} />
          {list.data?.conversations.length === 0 && <p className="card-body muted small">None yet: say something to start one.</p>}
          <ul className="tree" style={{ listStyle: "none", margin: 0 }}>
            {list.data?.conversations.map((c) => (
              <li key={c.id}>
                <Link to={`/chat/${c.id}`} aria-current={c.id === conversationId ? "true" : undefined}>
                  <span style={{ overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" }}>{c.title || "Untitled"}</span>
                  <span className="count">{relativeTime(c.updated_at, now)}</span>
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <section className="card" aria-label="Conversation">
          <div className="thread" ref={thread} tabIndex={0} role="log" aria-label="Thread">
            {conversationId && conversation.isLoading && <Loading />}
            <ErrorAlert error={conversation.error} />
            {!conversationId && !pending && (
              <EmptyState title="Start a conversation">Pick a model and send a message. Every turn is a recorded run.</EmptyState>
            )}
            {current?.turns.map((turn) => (
              <div key={turn.number} className="stack" style={{ gap: 8 }}>
                <div className="bubble user">{turn.content}</div>
                <div className="bubble assistant">
                  {turn.reply || <span className="muted">({turn.status})</span>}
                  <span className="meta">answered by {turn.model}</span>
                </div>
              </div>
            ))}
            {pending && !current?.turns.some((t) => t.run_id === stream.state.run?.id && t.status !== "running") && (
              <div className="stack" style={{ gap: 8 }}>
                <div className="bubble user">{pending.content}</div>
                <div className={`bubble assistant${stream.state.status === "running" ? " caret" : ""}`} aria-busy={stream.state.status === "running"}>
                  {stream.state.text}
                  <span className="meta">
                    {stream.state.status === "running" ? `${pending.model} is answering…` : `answered by ${stream.state.run?.model ?? pending.model}`}
                    {stream.state.run?.status === "completed" ? ` · ${formatUsd(stream.state.run.cost_usd)}` : ""}
                  </span>
                </div>
              </div>
            )}
            <ErrorAlert error={stream.state.error} />
          </div>
          <form onSubmit={send} className="card-body stack" style={{ borderTop: "1px solid var(--border)" }}>
            <Field label="Message">
              {({ id }) => (
                <textarea
                  id={id}
                  rows={3}
                  value={content}
                  onChange={(e) => setContent(e.target.value)}
                  onKeyDown={(e) => {
                    if (e.key === "Enter" && !e.shiftKey) void send(e as unknown as FormEvent);
                  }}
                  placeholder="Enter sends, Shift+Enter adds a line"
                />
              )}
            </Field>
            <div className="row">
              <Field label="Model" hint={current && chosenModel !== current.model ? `Switches from ${current.model} at this turn` : undefined}>
                {({ id, describedBy }) => (
                  <select id={id} aria-describedby={describedBy} value={chosenModel} onChange={(e) => setModel(e.target.value)}>
                    <ModelOptions current={chosenModel} />
                  </select>
                )}
              </Field>
              <button type="submit" className="btn primary" disabled={!content.trim() || stream.state.status === "running"}>
                Send
              </button>
            </div>
            <ErrorAlert error={error} />
          </form>
        </section>
      </div>
    </div>
  );
}
