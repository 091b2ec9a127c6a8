import AxeBuilder from "@axe-core/playwright";
import { expect, type Page } from "@playwright/test";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";

/** Screenshots go to test-results/screens; with PROMPTOPS_SCREENSHOTS=docs also to docs/images. */
export async function screenshot(page: Page, name: string) {
  const dirs = [resolve(import.meta.dirname, "../test-results/screens")];
  if (process.env.PROMPTOPS_SCREENSHOTS === "docs") dirs.push(resolve(import.meta.dirname, "../../docs/images"));
  for (const dir of dirs) {
    mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: `${dir}/console-${name}.png`, fullPage: false });
  }
}

/** No serious or critical accessibility violations on what the page shows now. */
export async function expectAccessible(page: Page, what: string) {
  const results = await new AxeBuilder({ page }).exclude(".monaco-editor .inputarea").analyze();
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(", ")}`),
    `accessibility of ${what}`,
  ).toEqual([]);
}

/** Console errors, failed API calls with 401, uncaught exceptions: collected for a final check. */
export function watch(page: Page) {
  const problems: string[] = [];
  const refreshes: number[] = [];
  page.on("console", (message) => {
    // Chromium logs every 4xx as a failed resource; the API's 4xx answers
    // are states the console shows (a refused save), checked by the tests.
    const handled = /Failed to load resource: the server responded with a status of 4\d\d/.test(message.text());
    if (message.type() === "error" && !handled) problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("response", (response) => {
    const url = new URL(response.url());
    if (url.pathname === "/api/v1/auth/refresh" && response.status() === 200) refreshes.push(Date.now());
    if (response.status() >= 500) problems.push(`${response.status()} from ${response.request().method()} ${url.pathname}`);
    if (response.status() === 401 && !url.pathname.startsWith("/api/v1/auth/")) {
      problems.push(`401 from ${response.request().method()} ${url.pathname}`);
    }
  });
  return { problems, refreshes };
}

export const PASSWORD = "correct horse battery staple";

export function uniqueEmail(prefix: string) {
  return `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}@example.com`;
}

/** Signs in through the form and waits until the console has the session. */
export async function signIn(page: Page, email: string) {
  await page.goto("/signin");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("navigation", { name: "Main" })).toBeVisible();
}
