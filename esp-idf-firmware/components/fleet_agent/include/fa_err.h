/* Return codes: the same values as esp_err_t so the ESP-IDF port can pass them through. */
#ifndef FA_ERR_H
#define FA_ERR_H

typedef int fa_err_t;

#define FA_OK                  0
#define FA_FAIL               -1
#define FA_ERR_NO_MEM          0x101
#define FA_ERR_INVALID_ARG     0x102
#define FA_ERR_INVALID_STATE   0x103
#define FA_ERR_INVALID_SIZE    0x104
#define FA_ERR_NOT_FOUND       0x105
#define FA_ERR_NOT_SUPPORTED   0x106
#define FA_ERR_TIMEOUT         0x107
#define FA_ERR_INVALID_RESPONSE 0x108
#define FA_ERR_INVALID_CRC     0x109
#define FA_ERR_INVALID_VERSION 0x10A
/* esp_ota_ops' codes (ESP_ERR_OTA_BASE 0x1500), passed through from the port. */
#define FA_ERR_OTA_BASE        0x1500
#define FA_ERR_OTA_VALIDATE_FAILED (FA_ERR_OTA_BASE + 0x03)

/* This component's own codes, on their own base the way esp_https_ota has ESP_ERR_HTTPS_OTA_BASE
 * (0x9000); 0x1A000 is clear of every ESP_ERR_*_BASE in ESP-IDF v5.5. */
#define FA_ERR_FLEET_BASE      0x1A000
#define FA_ERR_OTA_IN_PROGRESS (FA_ERR_FLEET_BASE + 1) /* fa_ota_perform(): not done, call again */
#define FA_ERR_OTA_REFUSED     (FA_ERR_FLEET_BASE + 2) /* the image is refused; the fa_refusal_t says why */
#define FA_ERR_OTA_DOWNLOAD    (FA_ERR_FLEET_BASE + 3) /* the download broke more than FA_OTA_MAX_RETRIES times */
#define FA_ERR_NOT_MINE        (FA_ERR_FLEET_BASE + 4) /* a message on a topic this device does not handle */

#endif
