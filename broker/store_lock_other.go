//go:build !unix

package broker

import (
	"errors"
	"os"
)

// lockDataDir: the data directory lock uses flock, which only unix
// systems have; a durable broker is refused elsewhere rather than run
// unprotected.
func lockDataDir(string) (*os.File, error) {
	return nil, errors.New("broker: a data directory needs flock, available on unix systems only")
}
