import { describe, expect, it } from "vitest";
import {
  SessionEndedError,
  SessionStore,
  STORAGE_KEY,
  msUntilRefresh,
  refreshDue,
  sessionFromTokens,
  type KeyValueStorage,
  type Lock,
  type TokenResponse,
} from "./session";

class MemoryStorage implements KeyValueStorage {
  data = new Map<string, string>();
  getItem(key: string) {
    return this.data.get(key) ?? null;
  }
  setItem(key: string, value: string) {
    this.data.set(key, value);
  }
  removeItem(key: string) {
    this.data.delete(key);
  }
}

/** A lock that runs holders one after another, as Web Locks do across tabs. */
function serialLock(): Lock {
  let tail: Promise<unknown> = Promise.resolve();
  return (_name, work) => {
    const run = tail.then(work, work);
    tail = run.catch(() => undefined);
    return run;
  };
}

const tokens = (n: number, expiresIn = 900): TokenResponse => ({
  access_token: `access-${n}`,
  refresh_token: `refresh-${n}`,
  expires_in: expiresIn,
  user_id: "u1",
  org_id: "o1",
  role: "owner",
});

describe("refresh timing", () => {
  it("refreshes a 15-minute token a minute before it expires", () => {
    const session = sessionFromTokens(tokens(1), 0);
    expect(refreshDue(session, 13 * 60_000)).toBe(false);
    expect(refreshDue(session, 14 * 60_000)).toBe(true);
    expect(msUntilRefresh(session, 0)).toBe(14 * 60_000);
  });

  it("keeps a fifth of a short token's life, at least 10 s", () => {
    const session = sessionFromTokens(tokens(1, 30), 0);
    expect(msUntilRefresh(session, 0)).toBe(20_000);
  });
});

describe("SessionStore", () => {
  it("hands out the stored token until it is due, then refreshes once", async () => {
    let clock = 0;
    const calls: string[] = [];
    const store = new SessionStore(
      new MemoryStorage(),
      async (refresh) => {
        calls.push(refresh);
        return tokens(calls.length + 1);
      },
      serialLock(),
      () => clock,
    );
    store.signIn(tokens(1));
    expect(await store.accessToken()).toBe("access-1");
    clock = 14.5 * 60_000;
    const [a, b] = await Promise.all([store.accessToken(), store.accessToken()]);
    expect([a, b]).toEqual(["access-2", "access-2"]);
    expect(calls).toEqual(["refresh-1"]);
  });

  it("never spends a refresh token twice across tabs sharing storage", async () => {
    const storage = new MemoryStorage();
    const lock = serialLock();
    const spent: string[] = [];
    const exchange = async (refresh: string) => {
      if (spent.includes(refresh)) throw new Error(`reused ${refresh}`);
      spent.push(refresh);
      await new Promise((r) => setTimeout(r, 5));
      return tokens(spent.length + 1);
    };
    const tabA = new SessionStore(storage, exchange, lock, () => 0);
    const tabB = new SessionStore(storage, exchange, lock, () => 0);
    tabA.signIn(tokens(1));
    const seen = tabA.get()?.refreshToken;
    const [a, b] = await Promise.all([tabA.refresh(seen, true), tabB.refresh(seen, true)]);
    expect(spent).toEqual(["refresh-1"]);
    expect(a.accessToken).toBe("access-2");
    expect(b.accessToken).toBe("access-2");
  });

  it("signs out and says why when the refresh token is refused", async () => {
    const storage = new MemoryStorage();
    const store = new SessionStore(
      storage,
      async () => {
        throw new SessionEndedError("Your session ended: sign in again.");
      },
      serialLock(),
      () => 0,
    );
    const reasons: (string | undefined)[] = [];
    store.subscribe((_s, reason) => reasons.push(reason));
    store.signIn(tokens(1));
    await expect(store.refresh(undefined, true)).rejects.toBeInstanceOf(SessionEndedError);
    expect(storage.getItem(STORAGE_KEY)).toBeNull();
    expect(reasons.at(-1)).toBe("Your session ended: sign in again.");
  });

  it("keeps the session through a network failure", async () => {
    const store = new SessionStore(
      new MemoryStorage(),
      async () => {
        throw new TypeError("Failed to fetch");
      },
      serialLock(),
      () => 0,
    );
    store.signIn(tokens(1));
    await expect(store.refresh(undefined, true)).rejects.toBeInstanceOf(TypeError);
    expect(store.get()?.accessToken).toBe("access-1");
  });
});
