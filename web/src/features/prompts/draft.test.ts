import { describe, expect, it } from "vitest";
import { draftBody, draftFromVersion, problemsByEditor, undeclared, emptyDraft } from "./draft";

describe("drafts", () => {
  it("round-trips a chat version into a body without empty model fields", () => {
    const draft = draftFromVersion({
      version: 2,
      messages: [{ role: "user", content: "Hi {{ name }}" }],
      model: { model: "mock/echo", temperature: 0.2 },
      variables: [{ name: "name", default: "Ada" }],
      message: "second",
      author: { kind: "user", id: "u" },
      created_at: "",
    } as never);
    expect(draft.kind).toBe("chat");
    expect(draftBody({ ...draft, model: { ...draft.model, max_tokens: null } })).toEqual({
      messages: [{ role: "user", content: "Hi {{ name }}" }],
      model: { model: "mock/echo", temperature: 0.2 },
      variables: [{ name: "name", default: "Ada" }],
      commit_message: "",
    });
  });

  it("names the variables a template uses without declaring them", () => {
    const draft = { ...emptyDraft(), kind: "text" as const, template: "{{ a }} {{ b }}", variables: [{ name: "a" }] };
    expect(undeclared(draft)).toEqual(["b"]);
  });

  it("puts the API's template problems on the editor they belong to", () => {
    const problems = problemsByEditor({
      type: "x",
      title: "Bad Request",
      status: 400,
      detail: "invalid",
      errors: [
        { field: "version.messages[1].content", description: "2:5: unclosed {{" },
        { field: "template", description: "1:3: bad variable name" },
        { field: "name", description: "must not be empty" },
      ],
    });
    expect(problems).toEqual({
      "messages[1]": [{ line: 2, column: 5, message: "unclosed {{" }],
      template: [{ line: 1, column: 3, message: "bad variable name" }],
    });
  });
});
