// Package config reads oslo.config-style INI files, so that an oslogo
// application can share its configuration files with OpenStack services
// written in Python.
//
// A [Config] is built with [New]; nothing in the package is global. An
// application declares its options with [Config.Register] (name, [Type],
// default, deprecated names, bounds, choices), loads one or more files with
// [Config.LoadFiles] (later files override earlier ones, like repeated
// --config-file flags), may override single values with [Config.Set], checks
// everything with [Config.Validate], and reads typed values with
// [Config.String], [Config.Int], [Config.Duration], [Config.List] and
// friends. [RegisterMessagingOpts] declares the options oslo.messaging reads
// ([DEFAULT], [oslo_messaging_notifications], [oslo_messaging_rabbit]) with
// oslo's names and defaults.
//
// # File syntax
//
// The syntax is exactly the one of oslo.config's own line parser
// (oslo_config/iniparser.py), which differs from Python's configparser and
// from most Go INI libraries:
//
//   - "[group]" starts a group; a header must end with "]" and name a group.
//     An assignment before any header is an error.
//   - "key = value" or "key: value" (whichever separator comes first); the
//     key and the value are trimmed, and one pair of matching single or
//     double quotes around the whole value is removed, so
//     url = 'rabbit://u:p@host:5672/' reads as rabbit://u:p@host:5672/.
//   - Lines starting with "#" or ";" are comments. There are no inline
//     comments: "a = 1 # one" has the value "1 # one".
//   - An indented line continues the previous value; the parts are joined
//     with a newline. A blank line ends the value.
//   - Keys are case-sensitive. Group names other than DEFAULT are
//     case-insensitive ([Oslo_Messaging_Rabbit] is [oslo_messaging_rabbit]);
//     DEFAULT must be spelled in capitals, [default] is a different group.
//   - A key repeated inside a file or across files: the last one wins, except
//     for [MultiString] options, which collect every value in file order.
//
// Errors name the file and the line (see [ParseError]).
//
// The parser is written here rather than taken from gopkg.in/ini.v1 because
// ini.v1 cannot reproduce oslo's grammar with any combination of its options:
// it silently turns "[DEFAULT] url = x" into an empty DEFAULT header (oslo
// rejects the line), puts keys that precede any header into DEFAULT, rejects
// a continuation line after a quoted value, keeps the indentation of
// continuation lines, strips backtick quotes that oslo keeps, leaves
// "a"b" quoted where oslo strips the outer pair, and reports errors without
// line numbers. The oslo grammar is forty lines of Python; the port is
// tested line for line against it.
package config
