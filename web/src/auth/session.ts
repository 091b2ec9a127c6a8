/**
 * The signed-in session: tokens kept in storage so a reload stays signed in,
 * and refreshed before the access token expires so nobody sees a 401 after
 * 15 minutes of use.
 *
 * Refresh tokens rotate and a reused one revokes the whole session, so two
 * tabs must never spend the same refresh token: a refresh runs under a Web
 * Lock shared by every tab, and re-reads storage once it holds the lock — if
 * another tab already refreshed, its tokens are taken instead.
 */

export interface TokenResponse {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  user_id: string;
  org_id: string;
  role: string;
}

export interface Session {
  accessToken: string;
  refreshToken: string;
  /** When the access token was issued and when it expires (ms since the epoch). */
  issuedAt: number;
  expiresAt: number;
  userId: string;
  orgId: string;
  role: string;
}

export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export type Lock = <T>(name: string, work: () => Promise<T>) => Promise<T>;

export const STORAGE_KEY = "promptops.session";
const LOCK_NAME = "promptops.refresh";

export function sessionFromTokens(tokens: TokenResponse, now: number): Session {
  return {
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    issuedAt: now,
    expiresAt: now + tokens.expires_in * 1000,
    userId: tokens.user_id,
    orgId: tokens.org_id,
    role: tokens.role,
  };
}

/** How long before expiry a token is refreshed: a fifth of its life, 10–60 s. */
export function refreshMargin(session: Session): number {
  const lifetime = session.expiresAt - session.issuedAt;
  return Math.min(60_000, Math.max(10_000, lifetime / 5));
}

export function refreshDue(session: Session, now: number): boolean {
  return now >= session.expiresAt - refreshMargin(session);
}

/** Milliseconds until the session should be refreshed (0 when due). */
export function msUntilRefresh(session: Session, now: number): number {
  return Math.max(0, session.expiresAt - refreshMargin(session) - now);
}

function parse(raw: string | null): Session | null {
  if (!raw) return null;
  try {
    const value = JSON.parse(raw) as Session;
    return typeof value.accessToken === "string" && typeof value.refreshToken === "string" ? value : null;
  } catch {
    return null;
  }
}

/** Runs `work` alone across tabs where the browser has Web Locks. */
export const browserLock: Lock = (name, work) =>
  typeof navigator !== "undefined" && navigator.locks
    ? (navigator.locks.request(name, () => work()) as Promise<Awaited<ReturnType<typeof work>>>)
    : work();

export class SessionEndedError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "SessionEndedError";
  }
}

export class SessionStore {
  private inFlight: Promise<Session> | null = null;
  private listeners = new Set<(session: Session | null, reason?: string) => void>();

  constructor(
    private readonly storage: KeyValueStorage,
    /** POST /api/v1/auth/refresh; rejects with `SessionEndedError` on 401. */
    private readonly exchange: (refreshToken: string) => Promise<TokenResponse>,
    private readonly lock: Lock = browserLock,
    private readonly now: () => number = Date.now,
  ) {}

  get(): Session | null {
    return parse(this.storage.getItem(STORAGE_KEY));
  }

  set(session: Session | null, reason?: string): void {
    if (session) this.storage.setItem(STORAGE_KEY, JSON.stringify(session));
    else this.storage.removeItem(STORAGE_KEY);
    for (const listener of this.listeners) listener(session, reason);
  }

  signIn(tokens: TokenResponse): Session {
    const session = sessionFromTokens(tokens, this.now());
    this.set(session);
    return session;
  }

  subscribe(listener: (session: Session | null, reason?: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A valid access token, refreshed first when it is due; null when signed out. */
  async accessToken(): Promise<string | null> {
    const session = this.get();
    if (!session) return null;
    if (!refreshDue(session, this.now())) return session.accessToken;
    return (await this.refresh(session.refreshToken)).accessToken;
  }

  /**
   * New tokens for the session that `seen` belongs to. One refresh per tab at
   * a time, one across tabs; a refresh another tab made meanwhile is adopted.
   * `force` refreshes even a token that is not due (after a 401).
   */
  refresh(seen?: string, force = false): Promise<Session> {
    if (this.inFlight) return this.inFlight;
    const work = this.lock(LOCK_NAME, async () => {
      const current = this.get();
      if (!current) throw new SessionEndedError("You are signed out.");
      const anotherTabRefreshed = seen !== undefined && current.refreshToken !== seen;
      if (anotherTabRefreshed || (!force && !refreshDue(current, this.now()))) return current;
      try {
        return this.signIn(await this.exchange(current.refreshToken));
      } catch (error) {
        if (error instanceof SessionEndedError) this.set(null, error.message);
        throw error;
      }
    });
    this.inFlight = work.finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }
}
