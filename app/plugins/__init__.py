"""Plugins: third-party steps, AI tasks, AI providers and templates (docs/plugins.md).

A plugin is a Python distribution with an entry point in the `wfs.plugins` group whose object is
an `app.plugins.api.Plugin`. `api` is the whole contract a plugin author sees; the rest of this
package loads, checks, registers and sandboxes what plugins declare.
"""
