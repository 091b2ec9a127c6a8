import { describe, expect, it } from "vitest";
import { initialValues, missingVariables, templateVariables, variableFields, variablesToSend } from "./template";

describe("templateVariables", () => {
  it("finds variables in order of first use and skips escaped braces", () => {
    expect(templateVariables("Hi {{ name }}, \\{{ not }} {{city}} {{ name }}", "{{ tone }}")).toEqual(["name", "city", "tone"]);
  });
});

describe("the variable form", () => {
  const fields = variableFields(
    [
      { name: "tone", default: "friendly", description: "How to sound" },
      { name: "name", default: null },
    ],
    ["{{ tone }} reply to {{ name }} about {{ topic }}"],
  );

  it("lists declared variables first, then undeclared ones the template uses", () => {
    expect(fields.map((f) => [f.name, f.required])).toEqual([
      ["tone", false],
      ["name", true],
      ["topic", true],
    ]);
  });

  it("fills in defaults and keeps what was typed before", () => {
    expect(initialValues(fields, { name: "Ada" })).toEqual({ tone: "friendly", name: "Ada", topic: "" });
  });

  it("names every required variable that is empty", () => {
    expect(missingVariables(fields, { tone: "", name: "Ada", topic: "" })).toEqual(["topic"]);
  });

  it("leaves an empty required variable out, so the server names it missing", () => {
    expect(variablesToSend(fields, { tone: "friendly", name: "", topic: "rain" })).toEqual({ topic: "rain" });
    expect(variablesToSend(fields, { tone: "", name: "Ada", topic: "rain" })).toEqual({ tone: "", name: "Ada", topic: "rain" });
  });

  it("leaves an unchanged default to the server", () => {
    expect(variablesToSend(fields, { tone: "friendly", name: "Ada", topic: "rain" })).toEqual({ name: "Ada", topic: "rain" });
    expect(variablesToSend(fields, { tone: "curt", name: "Ada", topic: "rain" })).toEqual({ tone: "curt", name: "Ada", topic: "rain" });
  });
});
