import { StrictMode, lazy, Suspense } from "react";
import { createRoot } from "react-dom/client";
import { createBrowserRouter, Navigate, RouterProvider } from "react-router";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { AuthProvider } from "./auth/AuthContext";
import { SignInPage, SignUpPage } from "./auth/AuthPages";
import { RequireAuth } from "./app/Layout";
import { Loading } from "./components/ui";
import { ApiError } from "./api/problem";
import "./styles.css";

const PromptsPage = lazy(() => import("./features/prompts/PromptsPage"));
const PromptPage = lazy(() => import("./features/prompts/PromptPage"));
const NewPromptPage = lazy(() => import("./features/prompts/NewPromptPage"));
const PlaygroundPage = lazy(() => import("./features/playground/PlaygroundPage"));
const ChatPage = lazy(() => import("./features/chat/ChatPage"));

function page(element: React.ReactNode) {
  return (
    <Suspense
      fallback={
        <div className="page">
          <Loading />
        </div>
      }
    >
      {element}
    </Suspense>
  );
}

const router = createBrowserRouter([
  { path: "/signin", element: <SignInPage /> },
  { path: "/signup", element: <SignUpPage /> },
  { path: "/welcome", element: <SignUpPage first /> },
  {
    element: <RequireAuth />,
    children: [
      { path: "/", element: <Navigate to="/prompts" replace /> },
      { path: "/prompts", element: page(<PromptsPage />) },
      { path: "/prompts/new", element: page(<NewPromptPage />) },
      { path: "/prompts/:promptId", element: page(<PromptPage />) },
      { path: "/playground", element: page(<PlaygroundPage />) },
      { path: "/chat", element: page(<ChatPage />) },
      { path: "/chat/:conversationId", element: page(<ChatPage />) },
      {
        path: "*",
        element: (
          <div className="page">
            <h1>Page not found</h1>
            <p className="muted">
              There is nothing at this address. <a href="/prompts">Go to prompts</a>.
            </p>
          </div>
        ),
      },
    ],
  },
]);

const queryClient = new QueryClient({
  defaultOptions: {
    queries: {
      staleTime: 10_000,
      refetchOnWindowFocus: false,
      // 4xx answers are final; retry only what may pass on a second try.
      retry: (count, error) => count < 2 && !(error instanceof ApiError && error.status >= 400 && error.status < 500),
    },
  },
});

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <QueryClientProvider client={queryClient}>
        <AuthProvider>
          <RouterProvider router={router} />
        </AuthProvider>
      </QueryClientProvider>
    </StrictMode>,
  );
}
