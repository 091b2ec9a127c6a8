/** A new prompt: its name and folder, then the content of its version 1. */
import { useState, type FormEvent } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "../../api/client";
import { ApiError } from "../../api/problem";
import { ErrorAlert, Field } from "../../components/ui";
import { draftBody, emptyDraft, type Draft } from "./draft";
import { VersionEditor, shownInline } from "./VersionEditor";

export default function NewPromptPage() {
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [name, setName] = useState("");
  const [folder, setFolder] = useState(params.get("folder") ?? "");
  const [tags, setTags] = useState("");
  const [description, setDescription] = useState("");
  const [draft, setDraft] = useState<Draft>(() => ({ ...emptyDraft(), commitMessage: "First version" }));
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const problem = error instanceof ApiError ? error.problem : null;
  const fieldError = (f: string) => (error instanceof ApiError ? error.fieldError(f) : undefined);

  const submit = async (event?: FormEvent) => {
    event?.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const created = await unwrap(
        api.POST("/api/v1/prompts", {
          body: {
            name: name.trim(),
            folder: folder.trim(),
            description,
            tags: tags
              .split(",")
              .map((t) => t.trim())
              .filter(Boolean),
            ...draftBody(draft),
          },
        }),
      );
      await queryClient.invalidateQueries({ queryKey: ["prompts"] });
      navigate(`/prompts/${created.prompt.id}`);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="page" onSubmit={submit} noValidate>
      <div className="page-head">
        <div>
          <p className="sub">
            <Link to="/prompts">Prompts</Link> /
          </p>
          <h1>New prompt</h1>
        </div>
      </div>
      <VersionEditor
        draft={draft}
        onChange={setDraft}
        problem={problem}
        header={
          <div className="card">
            <div className="card-body stack">
              <div className="row">
                <div className="grow">
                  <Field label="Name" error={fieldError("name")}>
                    {({ id, describedBy, invalid }) => (
                      <input
                        id={id}
                        required
                        aria-describedby={describedBy}
                        aria-invalid={invalid}
                        value={name}
                        onChange={(e) => setName(e.target.value)}
                        placeholder="support-reply"
                      />
                    )}
                  </Field>
                </div>
                <div className="grow">
                  <Field label="Folder" hint="Slash-separated, e.g. support/billing" error={fieldError("folder")}>
                    {({ id, describedBy, invalid }) => (
                      <input id={id} aria-describedby={describedBy} aria-invalid={invalid} value={folder} onChange={(e) => setFolder(e.target.value)} />
                    )}
                  </Field>
                </div>
              </div>
              <div className="row">
                <div className="grow">
                  <Field label="Description">
                    {({ id }) => <input id={id} value={description} onChange={(e) => setDescription(e.target.value)} />}
                  </Field>
                </div>
                <div className="grow">
                  <Field label="Tags" hint="Comma-separated" error={fieldError("tags")}>
                    {({ id, describedBy }) => <input id={id} aria-describedby={describedBy} value={tags} onChange={(e) => setTags(e.target.value)} />}
                  </Field>
                </div>
              </div>
            </div>
          </div>
        }
        footer={
          <>
            {shownInline(error) ? (
              <div className="alert error" role="alert">
                Not created: fix the problems marked in the template.
              </div>
            ) : (
              <ErrorAlert error={error} title="Not created" />
            )}
            <button type="submit" className="btn primary" disabled={busy || !name.trim()}>
              {busy ? "Creating…" : "Create prompt"}
            </button>
          </>
        }
      />
    </form>
  );
}
