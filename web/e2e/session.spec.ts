/**
 * Access tokens live 30 s in these tests: the console refreshes ahead of
 * expiry, so a person working past it never meets a 401; a session ended
 * elsewhere sends them to sign-in with the reason.
 */
import { expect, test } from "@playwright/test";
import { PASSWORD, signIn, uniqueEmail, watch } from "./helpers";

test("working past the access token's lifetime never shows a 401", async ({ page, request }) => {
  const email = uniqueEmail("refresh");
  await request.post("/api/v1/auth/signup", { data: { email, password: PASSWORD } });
  const watched = watch(page);
  await signIn(page, email);
  const first = await page.evaluate(() => JSON.parse(localStorage.getItem("promptops.session") ?? "{}").accessToken);
  // The refresh is due 10 s before the 30 s token expires.
  await expect.poll(() => watched.refreshes.length, { timeout: 40_000, intervals: [1000] }).toBeGreaterThan(0);
  const second = await page.evaluate(() => JSON.parse(localStorage.getItem("promptops.session") ?? "{}").accessToken);
  expect(second).not.toBe(first);
  // Past the first token's expiry, everything still works.
  await page.waitForTimeout(12_000);
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Playground" }).click();
  await page.getByLabel("Message").fill("still signed in");
  await page.getByRole("button", { name: "Run" }).click();
  await expect(page.getByRole("region", { name: "Output", exact: true })).toContainText("still signed in");
  expect(watched.problems).toEqual([]);
});

test("a session ended elsewhere leads to sign-in with the reason", async ({ page, request }) => {
  const email = uniqueEmail("revoked");
  await request.post("/api/v1/auth/signup", { data: { email, password: PASSWORD } });
  await signIn(page, email);
  const refresh = await page.evaluate(() => JSON.parse(localStorage.getItem("promptops.session") ?? "{}").refreshToken);
  // Signed out from another device: the refresh token is spent there.
  expect((await request.post("/api/v1/auth/logout", { data: { refresh_token: refresh } })).status()).toBe(204);
  // Make the stored access token look expired so the next call must refresh.
  await page.evaluate(() => {
    const session = JSON.parse(localStorage.getItem("promptops.session") ?? "{}");
    session.expiresAt = Date.now() - 1000;
    localStorage.setItem("promptops.session", JSON.stringify(session));
  });
  await page.reload();
  await expect(page).toHaveURL(/\/signin/);
  await expect(page.getByRole("status")).toContainText("Your session has ended");
});
