/** Who is signed in, and the actions that change it. */
import { createContext, useCallback, useContext, useEffect, useMemo, useState, useSyncExternalStore, type ReactNode } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { api, publicApi, sessions, unwrap, type Schemas } from "../api/client";
import { msUntilRefresh, type Session, type TokenResponse } from "./session";

interface Auth {
  session: Session | null;
  me: Schemas["MeView"] | undefined;
  /** Why the last session ended (shown on the sign-in page). */
  endedReason: string | null;
  /** The person signed out themselves (sign-in then starts afresh, not where they were). */
  signedOutByUser: boolean;
  signedIn: (tokens: TokenResponse) => void;
  signOut: () => Promise<void>;
  switchOrg: (orgId: string) => Promise<void>;
  can: (scope: string) => boolean;
}

const AuthContext = createContext<Auth | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const queryClient = useQueryClient();
  const [endedReason, setEndedReason] = useState<string | null>(null);
  const [signedOutByUser, setSignedOutByUser] = useState(false);
  const [session, setSession] = useState<Session | null>(() => sessions.get());

  useEffect(
    () =>
      sessions.subscribe((next, reason) => {
        setSession(next);
        if (!next && reason) setEndedReason(reason);
      }),
    [],
  );

  // Another tab signed in, out or refreshed.
  useEffect(() => {
    const onStorage = () => setSession(sessions.get());
    window.addEventListener("storage", onStorage);
    return () => window.removeEventListener("storage", onStorage);
  }, []);

  // Refresh ahead of expiry, and again when a sleeping tab wakes up.
  useEffect(() => {
    if (!session) return;
    const refresh = () => void sessions.refresh(session.refreshToken).catch(() => undefined);
    const timer = window.setTimeout(refresh, msUntilRefresh(session, Date.now()));
    const onVisible = () => {
      if (document.visibilityState === "visible") void sessions.accessToken().catch(() => undefined);
    };
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      window.clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, [session]);

  const orgId = session?.orgId;
  const me = useQuery({
    queryKey: ["me", orgId],
    queryFn: () => unwrap(api.GET("/api/v1/me")),
    enabled: Boolean(orgId),
    staleTime: 60_000,
  });

  const signedIn = useCallback(
    (tokens: TokenResponse) => {
      setEndedReason(null);
      setSignedOutByUser(false);
      // The new credential first, then every cached answer dropped and what
      // is on screen fetched again with it (another org's data never shows).
      sessions.signIn(tokens);
      void queryClient.resetQueries();
    },
    [queryClient],
  );

  const signOut = useCallback(async () => {
    // Forget the session here first, so nothing on screen uses it while the
    // gateway ends it.
    const current = sessions.get();
    setSignedOutByUser(true);
    sessions.set(null);
    queryClient.clear();
    if (current) {
      await publicApi.POST("/api/v1/auth/logout", { body: { refresh_token: current.refreshToken } }).catch(() => undefined);
    }
  }, [queryClient]);

  const switchOrg = useCallback(
    async (org: string) => {
      const old = sessions.get();
      const tokens = await unwrap(api.POST("/api/v1/auth/switch-org", { body: { org_id: org } }));
      signedIn(tokens);
      if (old) await publicApi.POST("/api/v1/auth/logout", { body: { refresh_token: old.refreshToken } }).catch(() => undefined);
    },
    [signedIn],
  );

  const scopes = me.data?.scopes;
  const can = useCallback((scope: string) => Boolean(scopes?.includes(scope)), [scopes]);

  const value = useMemo<Auth>(
    () => ({ session, me: me.data, endedReason, signedOutByUser, signedIn, signOut, switchOrg, can }),
    [session, me.data, endedReason, signedOutByUser, signedIn, signOut, switchOrg, can],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): Auth {
  const auth = useContext(AuthContext);
  if (!auth) throw new Error("useAuth outside AuthProvider");
  return auth;
}

/** Re-renders every `ms` milliseconds (relative times). */
export function useNow(ms: number): number {
  return useSyncExternalStore(
    (notify) => {
      const timer = window.setInterval(notify, ms);
      return () => window.clearInterval(timer);
    },
    () => Math.floor(Date.now() / ms) * ms,
  );
}
