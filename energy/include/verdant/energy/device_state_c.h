/* verdant/energy/device_state_c.h
 *
 * C-linkage surface over ManualDeviceStateProvider, for apps that feed device
 * state from outside C++ (an Android app through the NDK/JNI, a hospital
 * agent written in C, Python ctypes). Plain C: no exceptions, no C++ types.
 *
 *   verdant_device_state* s = verdant_device_state_new();
 *   verdant_device_state_set_battery(s, 80.0, 1);      // 80 %, charging
 *   verdant_device_state_set_network(s, VERDANT_NETWORK_UNMETERED);
 *   verdant_device_state_set_zone(s, "US-CISO");
 *   ...  verdant_device_state_free(s);
 *
 * Functions return 0 on success and -1 on invalid input (null handle, value
 * out of range); the previous value is kept on error.
 * Thread-safety: every function but _free may be called from any thread
 * concurrently on the same handle.
 */
#ifndef VERDANT_ENERGY_DEVICE_STATE_C_H_
#define VERDANT_ENERGY_DEVICE_STATE_C_H_

#ifdef __cplusplus
extern "C" {
#endif

typedef struct verdant_device_state verdant_device_state;

/* Values match verdant::energy::PowerSource / NetworkType and wire.proto. */
enum {
  VERDANT_POWER_UNKNOWN = 0,
  VERDANT_POWER_GRID = 1,
  VERDANT_POWER_SOLAR = 2,
  VERDANT_POWER_BATTERY = 3
};
enum { VERDANT_NETWORK_UNKNOWN = 0, VERDANT_NETWORK_UNMETERED = 1, VERDANT_NETWORK_CELLULAR = 2 };

verdant_device_state* verdant_device_state_new(void);
void verdant_device_state_free(verdant_device_state* s);

/* percent in [0, 100]; charging 0/1. */
int verdant_device_state_set_battery(verdant_device_state* s, double percent, int charging);
/* Full-charge capacity in watt-hours, >= 0. */
int verdant_device_state_set_battery_capacity_wh(verdant_device_state* s, double wh);
int verdant_device_state_set_power_source(verdant_device_state* s, int source);
int verdant_device_state_set_network(verdant_device_state* s, int network);
int verdant_device_state_set_idle(verdant_device_state* s, int idle);
/* NUL-terminated zone id, e.g. "ES". */
int verdant_device_state_set_zone(verdant_device_state* s, const char* zone);
/* gCO2e/kWh >= 0; a negative value clears it (not known). */
int verdant_device_state_set_local_intensity(verdant_device_state* s, double g_per_kwh);

#ifdef __cplusplus
} /* extern "C" */

namespace verdant::energy {
class ManualDeviceStateProvider;
// The C++ provider behind a C handle (not owned), so the client loop reads
// what the app fed: `AsProvider(handle)->Current()`. Null for a null handle.
ManualDeviceStateProvider* AsProvider(verdant_device_state* s);
}  // namespace verdant::energy
#endif

#endif /* VERDANT_ENERGY_DEVICE_STATE_C_H_ */
