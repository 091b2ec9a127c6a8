/**
 * What a new user does on the first day, end to end against the real binary:
 * sign up on an empty install → create a prompt with two variables → save a
 * second version → diff them → move `production` to v2 and roll it back →
 * run in the playground on mock/echo (streamed, with tokens and cost) → side
 * by side on mock/echo and mock/lorem → reopen a run from history → sign out
 * and back in. axe-core checks every page on the way; no console error and
 * no 401 may happen, although access tokens expire every 30 s.
 */
import { expect, test, type Page } from "@playwright/test";
import { expectAccessible, PASSWORD, screenshot, uniqueEmail, watch } from "./helpers";

async function typeInEditor(page: Page, label: string, text: string) {
  const editor = page.getByRole("textbox", { name: label, exact: true });
  await expect(editor).toBeVisible();
  await editor.focus();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(text);
}

test("a new user's first day: prompt studio, playground, sign out and in", async ({ page }) => {
  const watched = watch(page);
  const email = uniqueEmail("journey");

  // An empty install opens on its first-run screen (this file runs first on
  // the fresh install the tests start; against a used one it signs up).
  const setup = await (await page.request.get("/api/v1/auth/setup")).json();
  await page.goto("/");
  if (!setup.has_accounts) {
    await expect(page).toHaveURL(/\/welcome/);
    await expect(page.getByRole("heading", { name: "Welcome to promptops" })).toBeVisible();
    await expectAccessible(page, "first-run sign-up");
    await screenshot(page, "welcome");
  } else {
    await page.getByRole("link", { name: "Create an account" }).click();
  }
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();

  // No prompts yet: the org's first-run screen says what to do next.
  await expect(page.getByRole("heading", { name: "Get started" })).toBeVisible();
  await expect(page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Prompts" })).toBeVisible();
  await expect(page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Playground" })).toBeVisible();
  await expectAccessible(page, "empty prompt list");
  await screenshot(page, "first-run");

  // A prompt with two variables.
  await page.getByRole("button", { name: "Create your first prompt" }).click();
  await page.getByLabel("Name", { exact: true }).fill("support-reply");
  await page.getByLabel("Folder").fill("support/email");
  await page.getByLabel("Tags").fill("support, email");
  await page.getByRole("radio", { name: "Text" }).check();
  await typeInEditor(page, "Template", "Write a {{ tone }} reply to {{ customer }}.\nKeep it short.");
  await page.getByRole("button", { name: "Declare 2 used" }).click();
  await page.getByLabel("Default of tone").fill("friendly");
  await expectAccessible(page, "new prompt");
  await page.getByRole("button", { name: "Create prompt" }).click();
  await expect(page.getByRole("heading", { name: /support-reply/ })).toBeVisible();

  // A template error is shown where it is.
  await typeInEditor(page, "Template", "Write a {{ tone }} reply to {{ customer.\nKeep it short.");
  await page.getByRole("button", { name: "Save version 2" }).click();
  const problems = page.getByRole("list", { name: "Problems in Template" });
  await expect(problems).toContainText("Line 1, column");
  await expect(problems).toContainText("unclosed");
  await expect(page.locator(".monaco-editor .squiggly-error").first()).toBeAttached();
  await screenshot(page, "editor-error");

  // Version 2.
  await typeInEditor(page, "Template", "Write a {{ tone }} reply to {{ customer }}.\nKeep it under 80 words.\nSign as the support team.");
  await page.getByLabel("Commit message").fill("Shorter, signed replies");
  await page.getByRole("button", { name: "Save version 2" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Saved as version 2" })).toBeVisible();
  await expectAccessible(page, "prompt editor");
  await screenshot(page, "editor");

  // Diff v1 → v2.
  await page.getByRole("tab", { name: "Diff" }).click();
  const diff = page.getByRole("table", { name: "Template changes from v1 to v2" });
  await expect(diff).toContainText("Keep it short.");
  await expect(diff).toContainText("Keep it under 80 words.");
  await expect(page.getByRole("status").filter({ hasText: "template lines" })).toContainText("+2");
  await expectAccessible(page, "diff");
  await screenshot(page, "diff");

  // production → v2, then rolled back to v1 with a reason.
  await page.getByRole("tab", { name: /History/ }).click();
  await page.getByRole("button", { name: "Move label" }).click();
  const move = page.getByRole("dialog", { name: "Move label" });
  await move.getByLabel("Label").fill("production");
  await move.getByLabel("Version").selectOption("2");
  await move.getByLabel("Reason").fill("Reviewed by support lead");
  await move.getByRole("button", { name: "Move label" }).click();
  await expect(page.getByRole("heading", { name: /support-reply/ })).toContainText("production → v2");
  await page.getByRole("button", { name: "Roll back production" }).click();
  const rollback = page.getByRole("dialog", { name: "Roll back production" });
  await expect(rollback.getByLabel("Version")).toHaveValue("1");
  await rollback.getByLabel("Reason").fill("v2 signs twice");
  await rollback.getByRole("button", { name: "Roll back" }).click();
  await expect(page.getByRole("heading", { name: /support-reply/ })).toContainText("production → v1");
  await expectAccessible(page, "history and labels");
  await screenshot(page, "history");

  // The playground on mock/echo: streamed, then tokens and cost.
  await page.getByRole("link", { name: "Open in playground" }).click();
  await page.getByLabel("Version or label").selectOption({ label: "v2" });
  await expect(page.getByLabel("customer")).toBeVisible();
  await expect(page.getByLabel("tone")).toHaveValue("friendly");
  // A missing variable is refused as the API names it.
  await page.getByRole("button", { name: "Run" }).click();
  const output = page.getByRole("region", { name: "Output", exact: true });
  await expect(output.getByRole("alert")).toContainText("customer");
  await page.getByLabel("customer").fill("Ada");
  await page.getByLabel("Model").selectOption("mock/echo");
  await page.getByRole("button", { name: "Run" }).click();
  await expect(output).toContainText("Ada");
  await expect(output.getByLabel("Run details")).toContainText("Tokens");
  await expect(output.getByLabel("Run details")).toContainText("Cost");
  await expectAccessible(page, "playground");
  await screenshot(page, "playground");

  // Side by side: mock/echo and mock/lorem, each streaming with its numbers.
  await page.getByRole("button", { name: "Side by side" }).click();
  await page.getByLabel("Column 1").selectOption("model:mock/echo");
  await page.getByLabel("Column 2").selectOption("model:mock/lorem");
  await page.getByRole("button", { name: "Run" }).click();
  const left = page.getByRole("region", { name: "Result 1: mock/echo" });
  const right = page.getByRole("region", { name: "Result 2: mock/lorem" });
  await expect(left.getByLabel("Run details")).toContainText("Cost");
  await expect(right.getByLabel("Run details")).toContainText("Cost");
  await expect(left).toContainText("Ada");
  await expectAccessible(page, "side by side");
  await screenshot(page, "side-by-side");

  // History: reopen the first run into the playground.
  const history = page.getByRole("region", { name: "Last 50 runs of this prompt" }).or(page.locator("section.history"));
  await expect(history.getByRole("button", { name: /^Reopen / })).toHaveCount(3);
  await history.getByRole("button", { name: /^Reopen mock\/echo/ }).last().click();
  await expect(page.getByRole("region", { name: "Output", exact: true })).toContainText("Ada");
  await expect(page.getByLabel("customer")).toHaveValue("Ada");

  // What worked becomes version 3 (this model, a lower temperature).
  await page.getByLabel("Temperature").fill("0.2");
  await page.getByRole("button", { name: "Save as new version" }).click();
  const save = page.getByRole("dialog", { name: "Save as new version" });
  await save.getByLabel("Commit message").fill("Calmer");
  await save.getByRole("button", { name: "Save" }).click();
  await expect(save.getByRole("status")).toContainText("Saved as version 3");
  await save.getByRole("button", { name: "Done" }).click();

  // Sign out and back in.
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/signin/);
  await expectAccessible(page, "sign-in");
  await screenshot(page, "signin");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("heading", { name: "Prompts", exact: true })).toBeVisible();
  await expect(page.getByRole("link", { name: /support-reply/ })).toBeVisible();
  await expectAccessible(page, "prompt list");
  await screenshot(page, "prompts");

  expect(watched.problems).toEqual([]);
});
