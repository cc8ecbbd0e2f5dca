package main

import "github.com/hsmgate/hsmgate/keystore"

// cacheOptions are the settings of every watch-fed cache (transit keys,
// SSH roles and CAs, tokens and policies): store.degraded_grace, the log.
func cacheOptions(d *deps) keystore.CacheOptions {
	return keystore.CacheOptions{Grace: d.Config.Store.DegradedGrace, Logger: d.Log}
}
