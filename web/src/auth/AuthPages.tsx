/** Sign-in, sign-up and the first-run welcome of an empty install. */
import { useState, type FormEvent } from "react";
import { Link, Navigate, useSearchParams } from "react-router";
import { useQuery } from "@tanstack/react-query";
import { publicApi, unwrap } from "../api/client";
import { ApiError } from "../api/problem";
import { ErrorAlert, Field } from "../components/ui";
import { useAuth } from "./AuthContext";

function Logo() {
  return <img src="/favicon.svg" alt="" width={28} height={28} />;
}

function useNext(): string {
  const [params] = useSearchParams();
  const next = params.get("next");
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/prompts";
}

export function SignInPage() {
  const auth = useAuth();
  const next = useNext();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const setup = useQuery({
    queryKey: ["setup"],
    queryFn: () => unwrap(publicApi.GET("/api/v1/auth/setup")),
    staleTime: 30_000,
  });
  if (auth.session) return <Navigate to={next} replace />;
  if (setup.data && !setup.data.has_accounts) return <Navigate to="/welcome" replace />;

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      // Signed in, this page renders a redirect to `next` (one navigation only).
      auth.signedIn(await unwrap(publicApi.POST("/api/v1/auth/login", { body: { email, password } })));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="auth">
      <div className="card">
        <div className="card-body stack">
          <h1>
            <Logo /> Sign in to promptops
          </h1>
          {auth.endedReason && !error && <div className="alert info" role="status">{auth.endedReason}</div>}
          <form onSubmit={submit} noValidate>
            <Field label="Email">
              {({ id }) => (
                <input id={id} type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.target.value)} />
              )}
            </Field>
            <Field label="Password">
              {({ id }) => (
                <input
                  id={id}
                  type="password"
                  autoComplete="current-password"
                  required
                  value={password}
                  onChange={(e) => setPassword(e.target.value)}
                />
              )}
            </Field>
            <ErrorAlert error={error} />
            <button className="btn primary" type="submit" disabled={busy || !email || !password}>
              {busy ? "Signing in…" : "Sign in"}
            </button>
          </form>
          <p className="switch">
            New to promptops? <Link to={`/signup${next !== "/prompts" ? `?next=${encodeURIComponent(next)}` : ""}`}>Create an account</Link>
          </p>
        </div>
      </div>
    </main>
  );
}

export function SignUpPage({ first = false }: { first?: boolean }) {
  const auth = useAuth();
  const next = useNext();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [orgName, setOrgName] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  if (auth.session) return <Navigate to={next} replace />;
  const fieldError = (field: string) => (error instanceof ApiError ? error.fieldError(field) : undefined);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      auth.signedIn(
        await unwrap(publicApi.POST("/api/v1/auth/signup", { body: { email, password, org_name: orgName.trim() } })),
      );
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="auth">
      <div className="card">
        <div className="card-body stack">
          <h1>
            <Logo /> {first ? "Welcome to promptops" : "Create your account"}
          </h1>
          {first && (
            <p className="muted">
              This install has no accounts yet. The first account owns the first organization; invite your team from it
              later. Nothing leaves this machine until you add a provider — the built-in <code>mock/*</code> models run
              offline.
            </p>
          )}
          <form onSubmit={submit} noValidate>
            <Field label="Email" error={fieldError("email")}>
              {({ id, describedBy, invalid }) => (
                <input
                  id={id}
                  type="email"
                  autoComplete="username"
                  required
                  aria-describedby={describedBy}
                  aria-invalid={invalid}
                  value={email}
                  onChange={(e) => setEmail(e.target.value)}
                />
              )}
            </Field>
            <Field label="Password" hint="12 characters or more; not a common password." error={fieldError("password")}>
              {({ id, describedBy, invalid }) => (
                <input
                  id={id}
                  type="password"
                  autoComplete="new-password"
                  required
                  aria-describedby={describedBy}
                  aria-invalid={invalid}
                  value={password}
                  onChange={(e) => setPassword(e.target.value)}
                />
              )}
            </Field>
            <Field label="Organization name" hint="Optional; “My org” when left empty.">
              {({ id, describedBy }) => (
                <input id={id} aria-describedby={describedBy} placeholder="My org" value={orgName} onChange={(e) => setOrgName(e.target.value)} />
              )}
            </Field>
            {error instanceof ApiError && error.problem.errors?.length ? null : <ErrorAlert error={error} />}
            <button className="btn primary" type="submit" disabled={busy || !email || !password}>
              {busy ? "Creating account…" : "Create account"}
            </button>
          </form>
          {!first && (
            <p className="switch">
              Already have an account? <Link to="/signin">Sign in</Link>
            </p>
          )}
        </div>
      </div>
    </main>
  );
}
