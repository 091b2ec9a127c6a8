/** A user in two orgs switches between them; each org sees only its own prompts. */
import { expect, test } from "@playwright/test";
import { expectAccessible, PASSWORD, uniqueEmail, watch } from "./helpers";

test("the org switcher moves a member of two orgs between them", async ({ page, request }) => {
  const watched = watch(page);
  const owner = uniqueEmail("owner");
  const member = uniqueEmail("member");
  const signup = async (email: string, org: string) => {
    const response = await request.post("/api/v1/auth/signup", { data: { email, password: PASSWORD, org_name: org } });
    expect(response.status()).toBe(201);
    return (await response.json()) as { access_token: string; org_id: string };
  };
  const acme = await signup(owner, "Acme");
  const own = await signup(member, "Solo");
  const auth = (t: { access_token: string }) => ({ Authorization: `Bearer ${t.access_token}` });
  const created = await request.post("/api/v1/prompts", {
    headers: auth(acme),
    data: { name: "acme-only", template: "Hi", model: { model: "mock/echo" } },
  });
  expect(created.status(), await created.text()).toBe(201);
  // `production` is protected in Acme and points at v1.
  const { prompt } = (await created.json()) as { prompt: { id: string } };
  expect((await request.put("/api/v1/prompt-policy", { headers: auth(acme), data: { protected_labels: ["production"] } })).ok()).toBe(true);
  expect(
    (await request.put(`/api/v1/prompts/${prompt.id}/labels/production`, { headers: auth(acme), data: { version: 1 } })).ok(),
  ).toBe(true);
  const invited = await request.post("/api/v1/invitations", { headers: auth(acme), data: { email: member, role: "editor" } });
  expect(invited.status()).toBe(201);
  const { invitation_id } = (await invited.json()) as { invitation_id: string };
  const accepted = await request.post(`/api/v1/orgs/${acme.org_id}/invitations/${invitation_id}/accept`, { headers: auth(own) });
  expect(accepted.ok()).toBe(true);

  await page.goto("/signin");
  await page.getByLabel("Email").fill(member);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  const switcher = page.getByLabel("Organization");
  await expect(switcher).toBeVisible();
  await expect(switcher.getByRole("option")).toHaveText(["Solo (owner)", "Acme (editor)"]);
  await expect(page.getByRole("heading", { name: "Get started" })).toBeVisible();
  await expectAccessible(page, "org switcher");

  await switcher.selectOption({ label: "Acme (editor)" });
  await expect(page.getByRole("link", { name: /acme-only/ })).toBeVisible();
  await page.reload();
  await expect(page.getByLabel("Organization")).toHaveValue(acme.org_id);
  await expect(page.getByRole("link", { name: /acme-only/ })).toBeVisible();

  // An editor may move ordinary labels but not the protected one.
  await page.getByRole("link", { name: /acme-only/ }).click();
  await page.getByRole("tab", { name: /History/ }).click();
  await expect(page.getByRole("button", { name: "Move label" })).toBeEnabled();
  await expect(page.getByRole("button", { name: "Move production" })).toBeDisabled();
  await expect(page.getByText("Protected: production")).toBeVisible();

  await page.getByLabel("Organization").selectOption({ label: "Solo (owner)" });
  await expect(page.getByRole("heading", { name: "Get started" })).toBeVisible();
  expect(watched.problems).toEqual([]);
});
