/** The console without a mouse: sign in, run in the playground, move between a prompt's tabs, close a dialog. */
import { expect, test } from "@playwright/test";
import { PASSWORD, uniqueEmail } from "./helpers";

test("sign in, run a message and switch tabs with the keyboard alone", async ({ page, request }) => {
  const email = uniqueEmail("keys");
  const signup = await request.post("/api/v1/auth/signup", { data: { email, password: PASSWORD } });
  const { access_token } = (await signup.json()) as { access_token: string };
  const created = await request.post("/api/v1/prompts", {
    headers: { Authorization: `Bearer ${access_token}` },
    data: { name: "keys", template: "Hi {{ who }}", model: { model: "mock/echo" } },
  });
  const { prompt } = (await created.json()) as { prompt: { id: string } };

  await page.goto("/signin");
  // The form is rendered once the app has loaded; Tab before that reaches nothing.
  await expect(page.getByLabel("Email")).toBeVisible();
  await page.keyboard.press("Tab");
  await expect(page.getByLabel("Email")).toBeFocused();
  await page.keyboard.type(email);
  await page.keyboard.press("Tab");
  await expect(page.getByLabel("Password")).toBeFocused();
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press("Enter");
  await expect(page.getByRole("navigation", { name: "Main" })).toBeVisible();

  await page.goto("/playground");
  await page.getByLabel("Message").focus();
  await page.keyboard.type("typed, not clicked");
  await page.keyboard.press("Control+Enter");
  await expect(page.getByRole("region", { name: "Output", exact: true })).toContainText("typed, not clicked");

  await page.goto(`/prompts/${prompt.id}`);
  await page.getByRole("tab", { name: "Editor" }).focus();
  await page.keyboard.press("ArrowRight");
  await expect(page.getByRole("tab", { name: /History/ })).toBeFocused();
  await expect(page.getByRole("tab", { name: /History/ })).toHaveAttribute("aria-selected", "true");
  await page.keyboard.press("ArrowRight");
  await expect(page.getByRole("tab", { name: "Diff" })).toHaveAttribute("aria-selected", "true");

  await page.getByRole("tab", { name: /History/ }).click();
  await page.getByRole("button", { name: "Move label" }).focus();
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog", { name: "Move label" });
  await expect(dialog).toBeVisible();
  await expect(dialog.getByLabel("Label")).toBeFocused();
  await page.keyboard.press("Escape");
  await expect(dialog).toBeHidden();
});
