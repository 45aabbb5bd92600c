package config

import "strings"

// FileList implements flag.Value for a repeatable --config-file flag: each
// use appends a path, and the paths keep the order given, which is the
// order LoadFiles layers them in.
//
//	var files config.FileList
//	fs.Var(&files, "config-file", "oslo-style INI file (repeatable; later files win)")
//	...
//	err := cfg.LoadFiles(files...)
type FileList []string

// String returns the paths joined with commas.
func (f *FileList) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(*f, ",")
}

// Set appends one path.
func (f *FileList) Set(path string) error {
	*f = append(*f, path)
	return nil
}
