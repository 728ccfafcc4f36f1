// workflow-service's GraphiQL page, loaded by GET /graphql in a browser. No inline script, so
// the page runs under a strict Content-Security-Policy (script-src 'self').
//
// The API key: `/graphql#apiKey=KEY` (the fragment never reaches the server, so no access log
// keeps it) or `/graphql?apiKey=KEY` put `Authorization: Bearer KEY` in the headers editor and
// are removed from the address bar at once. The headers are remembered in this browser's
// localStorage, so later visits need no key in the URL.
//
// Queries and mutations go over HTTP with the headers editor's headers; subscriptions open one
// graphql-transport-ws socket each and send the headers editor's Authorization in the
// connection_init payload ({"authorization": "Bearer KEY"}), as the API expects.
(function () {
  "use strict";

  const KEY_PARAM = "apiKey";
  const REMEMBERED_HEADERS = "wfs-graphiql:headers";
  const DEFAULT_QUERY = `# workflow-service GraphiQL. Run with Ctrl-Enter.
# Your API key goes in the Headers tab below: {"Authorization": "Bearer <key>"}
# (or open this page as /graphql#apiKey=<key>).

query Me {
  viewer {
    role
    tenant {
      name
      tier
    }
  }
}
`;

  // Only the fragment: it never leaves the browser. A query string (`?apiKey=`) would reach
  // every proxy's access log before this script could remove it, so it is not read.
  function takeApiKey() {
    const url = new URL(window.location.href);
    const fragment = new URLSearchParams(url.hash.slice(1));
    const key = fragment.get(KEY_PARAM);
    if (fragment.has(KEY_PARAM)) {
      fragment.delete(KEY_PARAM);
      const rest = fragment.toString();
      url.hash = rest ? "#" + rest : "";
      window.history.replaceState(window.history.state, "", url.toString());
    }
    return key;
  }

  function authorization(headers) {
    for (const [name, value] of Object.entries(headers || {})) {
      if (name.toLowerCase() === "authorization" && typeof value === "string") {
        return value;
      }
    }
    return undefined;
  }

  function isSubscription(params) {
    const graphql = GraphiQL.GraphQL;
    try {
      const operation = graphql.getOperationAST(
        graphql.parse(params.query),
        params.operationName || undefined,
      );
      return Boolean(operation) && operation.operation === "subscription";
    } catch (error) {
      return false; // the server explains the syntax error
    }
  }

  function socketError(error) {
    if (error instanceof Error) {
      return error;
    }
    if (error && typeof error.code === "number") {
      const reason = error.reason ? ": " + error.reason : "";
      return new Error("the socket closed (" + error.code + reason + ")");
    }
    return new Error(String(error));
  }

  function subscriptionFetcher(socketUrl, params, headers) {
    const auth = authorization(headers);
    return {
      subscribe(observer) {
        const client = graphqlWs.createClient({
          url: socketUrl,
          lazy: true,
          retryAttempts: 0,
          connectionParams: auth ? { authorization: auth } : {},
        });
        const request = {
          query: params.query,
          variables: params.variables,
          operationName: params.operationName,
        };
        const stop = client.subscribe(request, {
          next(result) {
            observer.next(result);
          },
          error(error) {
            if (Array.isArray(error)) {
              observer.next({ errors: error }); // the operation's own GraphQL errors
              observer.complete();
            } else {
              observer.error(socketError(error));
            }
            client.dispose();
          },
          complete() {
            observer.complete();
            client.dispose();
          },
        });
        return {
          unsubscribe() {
            stop();
            client.dispose();
          },
        };
      },
    };
  }

  function render() {
    const key = takeApiKey();
    const path = window.location.pathname;
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socketUrl = scheme + window.location.host + path;
    const http = GraphiQL.createFetcher({ url: path });
    function fetcher(params, options) {
      if (isSubscription(params)) {
        return subscriptionFetcher(socketUrl, params, options && options.headers);
      }
      return http(params, options);
    }
    const props = {
      fetcher: fetcher,
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      defaultQuery: DEFAULT_QUERY,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      inputValueDeprecation: true,
    };
    // GraphiQL persists the headers editor only once it is edited (and clears its stored
    // headers while it mounts), so a key from the URL is remembered here, and offered as the
    // default headers on a later visit: headers edited in GraphiQL take precedence.
    if (key) {
      props.headers = JSON.stringify({ Authorization: "Bearer " + key }, null, 2);
      props.defaultEditorToolsVisibility = "headers";
      window.localStorage.setItem(REMEMBERED_HEADERS, props.headers);
    } else {
      props.defaultHeaders = window.localStorage.getItem(REMEMBERED_HEADERS) || undefined;
    }
    const root = ReactDOM.createRoot(document.getElementById("graphiql"));
    root.render(React.createElement(GraphiQL, props));
  }

  render();
})();
