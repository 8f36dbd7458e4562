/* Example app: Wi-Fi, clock, identity from NVS, then the fleet agent with one shadow key ("led").
 * Provisioning writes NVS namespace "fleet_id": device_id (str), ota_key (32-byte blob, the
 * HKDF-derived per-device key), ecdsa_pub (PEM blob, optional), mqtt_pass (str, development). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "esp_event.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_netif.h"
#include "esp_netif_sntp.h"
#include "esp_wifi.h"
#include "fa_port_esp.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "nvs.h"
#include "nvs_flash.h"
#include "sdkconfig.h"

static const char *TAG = "app";
static EventGroupHandle_t s_net;
#define NET_UP BIT0

static void on_wifi(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg, (void)data;
    if (base == WIFI_EVENT && (id == WIFI_EVENT_STA_START || id == WIFI_EVENT_STA_DISCONNECTED)) {
        xEventGroupClearBits(s_net, NET_UP);
        esp_wifi_connect();
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        xEventGroupSetBits(s_net, NET_UP);
    }
}

static void wifi_up(void)
{
    s_net = xEventGroupCreate();
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&init));
    ESP_ERROR_CHECK(esp_event_handler_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_wifi, NULL));
    ESP_ERROR_CHECK(esp_event_handler_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_wifi, NULL));
    wifi_config_t wc = { 0 };
    strlcpy((char *)wc.sta.ssid, CONFIG_FLEET_WIFI_SSID, sizeof(wc.sta.ssid));
    strlcpy((char *)wc.sta.password, CONFIG_FLEET_WIFI_PASSWORD, sizeof(wc.sta.password));
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &wc));
    ESP_ERROR_CHECK(esp_wifi_start());
    xEventGroupWaitBits(s_net, NET_UP, pdFALSE, pdTRUE, portMAX_DELAY);
}

static void clock_up(void)
{
    /* Manifests expire: nothing runs on a clock that was never set. */
    esp_sntp_config_t sc = ESP_NETIF_SNTP_DEFAULT_CONFIG("pool.ntp.org");
    esp_netif_sntp_init(&sc);
    while (esp_netif_sntp_sync_wait(pdMS_TO_TICKS(10000)) != ESP_OK) {
        ESP_LOGW(TAG, "waiting for the time");
    }
}

static fa_err_t led_handler(void *user, const char *key, const char *json, size_t len)
{
    (void)user, (void)key;
    bool on = len == 4 && memcmp(json, "\"on\"", 4) == 0;
    ESP_LOGI(TAG, "led %s", on ? "on" : "off"); /* a real board drives CONFIG_FLEET_LED_GPIO here */
    return FA_OK;
}

void app_main(void)
{
    static char device_id[65], mqtt_pass[65], kid[FA_KID_MAX];
    static uint8_t ota_key[32], ecdsa_pub[512];
    esp_err_t err = nvs_flash_init();
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    ESP_ERROR_CHECK(err);

    fa_esp_config_t cfg = { .hw = CONFIG_IDF_TARGET, .broker_uri = CONFIG_FLEET_BROKER_URI };
    nvs_handle_t id;
    size_t len;
    if (nvs_open("fleet_id", NVS_READONLY, &id) == ESP_OK) {
        len = sizeof(device_id);
        if (nvs_get_str(id, "device_id", device_id, &len) == ESP_OK) {
            cfg.device_id = device_id;
        }
        len = sizeof(ota_key);
        if (nvs_get_blob(id, "ota_key", ota_key, &len) == ESP_OK && len == sizeof(ota_key)) {
            cfg.hmac_key = ota_key;
        }
        len = sizeof(ecdsa_pub);
        if (nvs_get_blob(id, "ecdsa_pub", ecdsa_pub, &len) == ESP_OK) {
            cfg.ecdsa_pub = ecdsa_pub;
            cfg.ecdsa_pub_len = len;
        }
        len = sizeof(kid); /* the kid the provisioned keys sign under; "k1" when absent */
        if (nvs_get_str(id, "ota_kid", kid, &len) == ESP_OK) {
            cfg.kid = kid;
        }
        len = sizeof(mqtt_pass);
        if (nvs_get_str(id, "mqtt_pass", mqtt_pass, &len) == ESP_OK) {
            cfg.mqtt_password = mqtt_pass;
        }
        nvs_close(id);
    }
    if (cfg.device_id == NULL) {
        uint8_t mac[6];
        esp_read_mac(mac, ESP_MAC_WIFI_STA);
        snprintf(device_id, sizeof(device_id), "%s-%02x%02x%02x%02x%02x%02x", CONFIG_IDF_TARGET, mac[0], mac[1],
                 mac[2], mac[3], mac[4], mac[5]);
        cfg.device_id = device_id;
    }
    cfg.mqtt_username = cfg.device_id;

    wifi_up();
    clock_up();
    fa_esp_t *agent;
    ESP_ERROR_CHECK(fa_esp_start(&cfg, &agent));
    fa_esp_on_shadow_key(agent, "led", led_handler, NULL);
    ESP_LOGI(TAG, "fleet agent running as %s", cfg.device_id);
}
