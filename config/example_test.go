package config_test

import (
	"fmt"
	"strings"

	"github.com/oslogo/oslogo/config"
)

// An application declares its own option next to oslo.messaging's, reads
// the my.conf of the add-service example, and gets both.
func Example() {
	cfg := config.New()
	if err := config.RegisterMessagingOpts(cfg); err != nil {
		panic(err)
	}
	// The application's own option, as cfg.StrOpt('url', default='0.0.0.0').
	if err := cfg.Register(config.DefaultGroup, config.Opt{
		Name: "url", Type: config.String, Default: "0.0.0.0", Secret: true,
		Help: "Transport URL of the add service.",
	}); err != nil {
		panic(err)
	}
	myConf := `[DEFAULT]
url = 'rabbit://openstack:stack2018@127.0.0.1:5672/'
`
	// Real programs call cfg.LoadFiles(files...) with a config.FileList flag.
	if err := cfg.LoadReader("my.conf", strings.NewReader(myConf)); err != nil {
		panic(err)
	}
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	fmt.Println(cfg.String("", "url"))
	fmt.Println(cfg.Duration("", "rpc_response_timeout"))
	// Output:
	// rabbit://openstack:stack2018@127.0.0.1:5672/
	// 1m0s
}
