// Package hygiene holds repository-wide checks that no compiler or linter
// run by the Makefile makes: every exported identifier of a library
// package has a doc comment, and every package has a package comment.
package hygiene
