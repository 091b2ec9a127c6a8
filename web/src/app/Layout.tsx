/** The signed-in shell: navigation, org switcher, who is signed in. */
import { useState } from "react";
import { NavLink, Navigate, Outlet, useLocation, useNavigate } from "react-router";
import { useAuth } from "../auth/AuthContext";
import { ErrorAlert, Icon } from "../components/ui";

export function RequireAuth() {
  const { session, signedOutByUser } = useAuth();
  const location = useLocation();
  if (!session) {
    if (signedOutByUser) return <Navigate to="/signin" replace />;
    const next = encodeURIComponent(location.pathname + location.search);
    return <Navigate to={`/signin?next=${next}`} replace />;
  }
  return <Layout />;
}

function Layout() {
  const { me, signOut, switchOrg, session } = useAuth();
  const [switchError, setSwitchError] = useState<unknown>(null);
  const navigate = useNavigate();
  const orgs = me?.orgs ?? [];
  return (
    <div className="shell">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <aside className="sidebar">
        <NavLink to="/prompts" className="brand">
          <img src="/favicon.svg" alt="" /> promptops
        </NavLink>
        <nav className="nav" aria-label="Main">
          <NavLink to="/prompts">
            <Icon name="prompts" /> Prompts
          </NavLink>
          <NavLink to="/playground">
            <Icon name="play" /> Playground
          </NavLink>
          <NavLink to="/chat">
            <Icon name="chat" /> Chat
          </NavLink>
        </nav>
        <div className="sidebar-foot">
          {orgs.length > 1 ? (
            <>
              <label htmlFor="org-switcher">Organization</label>
              <select
                id="org-switcher"
                value={session?.orgId}
                onChange={(e) => {
                  setSwitchError(null);
                  // A page of one org's prompt or run means nothing in another: start at the list.
                  switchOrg(e.target.value)
                    .then(() => navigate("/prompts"))
                    .catch(setSwitchError);
                }}
              >
                {orgs.map((org) => (
                  <option key={org.org_id} value={org.org_id}>
                    {org.name} ({org.role})
                  </option>
                ))}
              </select>
            </>
          ) : (
            orgs[0] && <span className="who" title="Organization">{orgs[0].name}</span>
          )}
          {me && <span className="who" title={me.email}>{me.email}</span>}
          <button type="button" className="btn small" onClick={() => void signOut()}>
            <Icon name="logout" /> Sign out
          </button>
        </div>
      </aside>
      <main className="main" id="main" tabIndex={-1}>
        {Boolean(switchError) && (
          <div className="page">
            <ErrorAlert error={switchError} title="Could not switch organization" />
          </div>
        )}
        <Outlet />
      </main>
    </div>
  );
}
