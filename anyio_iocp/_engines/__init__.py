"""One folder per engine; an engine imports only the interface, the flow
package and its own shim."""
