import { existsSync, readFileSync, rmSync } from "node:fs";
import { STATE_FILE } from "./global-setup";

export default async function globalTeardown() {
  if (!existsSync(STATE_FILE)) return;
  const state = JSON.parse(readFileSync(STATE_FILE, "utf8")) as { pid: number; dir: string };
  try {
    process.kill(state.pid, "SIGTERM");
  } catch {
    return;
  }
  for (let i = 0; i < 50; i++) {
    try {
      process.kill(state.pid, 0);
    } catch {
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    process.kill(state.pid, "SIGKILL");
  } catch {
    // already gone
  }
  if (!process.env.KEEP_E2E_DATA) rmSync(state.dir, { recursive: true, force: true });
  rmSync(STATE_FILE, { force: true });
}
