/** Prompt files in and out of the studio: import (checked, then applied), export, archive and restore. */
import { expect, test } from "@playwright/test";
import { expectAccessible, PASSWORD, signIn, uniqueEmail, watch } from "./helpers";

const DOCUMENT = `format: promptops.prompts/v1
prompts:
  - name: triage
    folder: support
    tags: [support]
    versions:
      - template: "Classify {{ ticket }} as billing, bug or other."
        model: { model: mock/echo }
  - name: summarise
    folder: support
    versions:
      - messages:
          - { role: system, content: "You summarise support threads." }
          - { role: user, content: "{{ thread }}" }
        model: { model: mock/lorem }
`;

test("import a YAML file, export it back, archive and restore a prompt", async ({ page, request }) => {
  const email = uniqueEmail("studio");
  await request.post("/api/v1/auth/signup", { data: { email, password: PASSWORD } });
  const watched = watch(page);
  await signIn(page, email);

  await page.getByRole("button", { name: "Import", exact: true }).click();
  const dialog = page.getByRole("dialog", { name: "Import prompts" });
  await dialog.getByLabel("Prompt file (JSON or YAML)").setInputFiles({
    name: "support.yaml",
    mimeType: "application/yaml",
    buffer: Buffer.from(DOCUMENT),
  });
  await dialog.getByRole("button", { name: "Check file" }).click();
  await expect(dialog.getByRole("status")).toContainText("This file will:");
  await expect(dialog.getByRole("status")).toContainText("create support/triage");
  await expectAccessible(page, "import dialog");
  await dialog.getByRole("button", { name: "Apply 2 changes" }).click();
  await expect(dialog.getByRole("status")).toContainText("Imported:");
  await dialog.getByRole("button", { name: "Done" }).click();
  await expect(page.getByRole("link", { name: /triage/ })).toBeVisible();
  await expect(page.getByRole("link", { name: /summarise/ })).toBeVisible();

  // A broken file is refused whole, with its reason.
  await page.getByRole("button", { name: "Import", exact: true }).click();
  await dialog.getByLabel("Prompt file (JSON or YAML)").setInputFiles({
    name: "broken.yaml",
    mimeType: "application/yaml",
    buffer: Buffer.from("format: promptops.prompts/v1\nprompts:\n  - name: bad\n    versions:\n      - template: 'Hi {{ oops'\n"),
  });
  await dialog.getByRole("button", { name: "Check file" }).click();
  await expect(dialog.getByRole("alert")).toContainText("unclosed");
  await dialog.getByRole("button", { name: "Cancel" }).click();

  // The folder tree and the tag filter.
  await page.getByRole("navigation", { name: "Folders" }).getByRole("link", { name: /support/ }).click();
  await expect(page).toHaveURL(/folder=support/);
  await page.getByRole("link", { name: "support (1 prompt)" }).click();
  await expect(page).toHaveURL(/tag=support/);
  await expect(page.getByRole("list", { name: "Prompts" }).getByRole("listitem")).toHaveCount(1);

  // Export downloads the folder as YAML.
  const download = page.waitForEvent("download");
  await page.getByRole("button", { name: /Export/ }).click();
  expect((await download).suggestedFilename()).toBe("prompts-support.yaml");

  // Archive with a reason, then restore.
  await page.getByRole("link", { name: /triage/ }).click();
  await page.getByRole("button", { name: "Archive" }).click();
  const archive = page.getByRole("dialog", { name: "Archive triage" });
  await archive.getByLabel("Reason").fill("replaced by the new router");
  await archive.getByRole("button", { name: "Archive" }).click();
  await expect(page.getByRole("heading", { level: 1 })).toContainText("archived");
  await expect(page.getByRole("button", { name: /Save version/ })).toBeDisabled();
  await expect(archive).toBeHidden();
  await page.getByRole("button", { name: "Restore" }).click();
  await page.getByRole("dialog", { name: "Restore triage" }).getByRole("button", { name: "Restore" }).click();
  await expect(page.getByRole("heading", { level: 1 })).not.toContainText("archived");
  expect(watched.problems).toEqual([]);
});
