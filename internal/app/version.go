package app

import (
	"runtime"
	"runtime/debug"

	"radbridge/internal/opsapi"
)

// Version is set at build time with
// -ldflags "-X radbridge/internal/app.Version=v1.2.3". When empty, the
// module version recorded by the Go toolchain is used, else "devel".
var Version string

// ReadBuildInfo returns what is known of the running binary's build.
func ReadBuildInfo() opsapi.BuildInfo {
	bi := opsapi.BuildInfo{Version: Version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if ok {
		if bi.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			bi.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				bi.VCSRevision = s.Value
			case "vcs.time":
				bi.VCSTime = s.Value
			case "vcs.modified":
				bi.VCSModified = s.Value == "true"
			}
		}
	}
	if bi.Version == "" {
		bi.Version = "devel"
	}
	return bi
}
